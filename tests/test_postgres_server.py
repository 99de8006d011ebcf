"""The tests' own PostgreSQL server: reachable through its socket only, and of a version we support."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres_server import MIN_SERVER_MAJOR, PostgresServer

psycopg = pytest.importorskip("psycopg")


def test_server_listens_on_its_socket_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('listen_addresses', 'unix_socket_directories', 'fsync', 'server_version_num')"
            ).fetchall()
        )
    assert settings["listen_addresses"] == ""
    assert settings["unix_socket_directories"] == str(postgres_server.socket_dir)
    assert settings["fsync"] == "off"
    assert int(settings["server_version_num"]) >= MIN_SERVER_MAJOR * 10000
    assert (Path(postgres_server.socket_dir) / f".s.PGSQL.{postgres_server.port}").is_socket()


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        name = conn.execute("SELECT current_database()").fetchone()
    assert tables == (0,)
    assert name is not None and name[0].startswith("see_test_")
