"""Fixtures for the PostgreSQL tests: one throwaway server per session, one database per test.

Without a server (no binaries, no psycopg, a start that fails) every test that asks for one
skips with the same one-line reason. CI sets SEE_PERSISTENCE_REQUIRE_POSTGRES=1, which turns
that skip into a failure: there the PostgreSQL tests must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest
from postgres_server import PostgresServer, PostgresUnavailable, find_binaries

REQUIRE_ENV_VAR = "SEE_PERSISTENCE_REQUIRE_POSTGRES"


def _unavailable(reason: str) -> NoReturn:
    message = f"PostgreSQL tests need a server: {reason}"
    if os.environ.get(REQUIRE_ENV_VAR, "") not in ("", "0"):
        pytest.fail(f"{message} (and {REQUIRE_ENV_VAR} is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test session, stopped at its end whatever the tests did."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgresql]')")
    try:
        binaries = find_binaries()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    server = PostgresServer(binaries)
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    import psycopg

    name = f"see_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        # PostgreSQL 15's default strategy writes the template through the WAL: about 40 ms of
        # server CPU a database here, against about 14 ms for a file copy (fsync is off).
        strategy = " STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else ""
        admin.execute(f'CREATE DATABASE "{name}"{strategy}')
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            # FORCE: a connection the test leaked must not keep its database alive.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
