"""What a database argument names (backends.py), and a postgresql:// URL everywhere a database is taken.

Where the PostgreSQL backend is not complete yet (`keys`, `demo`, `resolve_db_path`), a URL
must fail at once with a sentence saying so, in the API and on the command line, never as
SQLite failing to open a file named like a URL. The Reader, the Client and the writer take one
(test_postgresql_reader.py, test_postgresql_client.py, test_postgresql_writer.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli

from see_persistence import BackendUnavailable, CallerError, Client, Reader, Writer
from see_persistence.backends import DatabaseURL, parse_database, redact_url, require_backend
from see_persistence.locations import DB_ENV_VAR, resolve_db_path

URL = "postgresql://alice:s3cret@db.example/flows"
NOT_COMPLETE = "PostgreSQL support is not complete in this version"


@pytest.mark.parametrize(
    "value",
    [
        "workflows.db",
        "/data/workflows.db",
        "~/x.db",
        "./postgresql:/x",
        "C:\\data\\w.db",
        "db:name",
        Path("a.db"),
    ],
)
def test_paths_are_sqlite_files(value: str | Path) -> None:
    assert parse_database(value) is None


@pytest.mark.parametrize(
    "value", [URL, "postgres://db/flows", "POSTGRESQL://db/flows", "postgresql:///flows?host=/run/pg"]
)
def test_postgresql_urls_name_a_server(value: str) -> None:
    assert parse_database(value) == DatabaseURL("postgresql", value)


def test_another_scheme_is_refused_without_its_password() -> None:
    with pytest.raises(CallerError, match="mysql:// URL") as caught:
        parse_database("mysql://bob:pw@host/db")
    assert "pw" not in str(caught.value)


def test_a_url_folded_by_pathlib_is_explained() -> None:
    with pytest.raises(CallerError, match=r"pathlib\.Path"):
        parse_database(Path("postgresql://db/flows"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "postgresql://alice:***@db.example/flows"),
        ("postgresql://alice@db/flows", "postgresql://alice@db/flows"),
        (
            "postgresql://db/flows?user=a&password=pw&host=/tmp",
            "postgresql://db/flows?user=a&password=***&host=/tmp",
        ),
        ("postgresql://:pw@db:5433/flows", "postgresql://:***@db:5433/flows"),
    ],
)
def test_passwords_are_never_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    database = parse_database(url)
    assert database is not None
    assert str(database) == shown
    assert "pw" not in repr(database) and "s3cret" not in repr(database)


def test_require_backend_says_what_is_missing() -> None:
    database = DatabaseURL("postgresql", URL)
    with pytest.raises(BackendUnavailable, match=NOT_COMPLETE):
        require_backend(database)
    with pytest.raises(BackendUnavailable, match=r"pip install 'see-persistence\[postgresql\]'"):
        require_backend(database, implemented=frozenset({"sqlite", "postgresql"}), installed=False)
    require_backend(database, implemented=frozenset({"sqlite", "postgresql"}), installed=True)


def test_resolve_db_path_refuses_a_url_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(BackendUnavailable, match=NOT_COMPLETE):
        resolve_db_path(URL)
    monkeypatch.setenv(DB_ENV_VAR, URL)
    with pytest.raises(BackendUnavailable, match=NOT_COMPLETE) as caught:
        resolve_db_path(None)
    assert "s3cret" not in str(caught.value)


def test_a_writer_of_a_url_is_the_postgresql_writer_and_connects_only_when_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("psycopg")
    from see_persistence.writer.pg_service import PostgresWriter

    writer = Writer(URL, standby=True)
    assert isinstance(writer, PostgresWriter)
    assert (writer.url, writer.standby, writer.epoch) == (URL, True, 0)
    monkeypatch.setenv(DB_ENV_VAR, URL)
    assert isinstance(Writer(), PostgresWriter)
    with pytest.raises(TypeError, match="adopt"):
        Writer(URL, adopt=True)  # a file's option
    with pytest.raises(ValueError, match="TCP only"):
        Writer(URL, listen=["ipc"])


def test_a_reader_of_a_url_connects_only_when_it_reads() -> None:
    pytest.importorskip("psycopg")
    reader = Reader(URL)  # db.example is never reached: nothing is read
    assert "s3cret" not in repr(reader) and "s3cret" not in str(reader.database)
    reader.close()


def test_a_url_without_the_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import see_persistence.backends as backends

    monkeypatch.setattr(backends, "backend_installed", lambda backend: backend == "sqlite")
    for make in (Reader, Client, Writer):
        with pytest.raises(BackendUnavailable, match=r"pip install 'see-persistence\[postgresql\]'"):
            make(URL)


def test_the_command_line_says_so_in_one_line() -> None:
    pytest.importorskip("psycopg")
    # status reads a URL: a server it cannot reach is one line, the password hidden.
    result = cli("status", "--db", URL, timeout=30)
    line = assert_one_line_error(result, 1, "cannot read", "postgresql://alice:***@db.example/flows")
    assert line.startswith("see-persistence status: ")
    assert "s3cret" not in result.stderr

    # demo still takes a file only.
    result = cli("demo", "--db", URL, timeout=30)
    assert_one_line_error(result, 1, NOT_COMPLETE)
    assert "s3cret" not in result.stderr


def test_the_writer_command_takes_a_url_and_refuses_a_file_s_options_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    env = {**os.environ, "SEE_PERSISTENCE_KEYS_DIR": str(tmp_path / "keys")}
    result = cli("writer", "--db", URL, "--adopt", "--exit-when-idle", "5", timeout=30, env=env)
    assert_one_line_error(result, 2, "not for a PostgreSQL database: --adopt, --exit-when-idle")
    unreachable = f"postgresql://alice:s3cret@/flows?host={tmp_path / 'no-server-here'}"
    result = cli("writer", "--db", unreachable, timeout=60, env=env)
    line = assert_one_line_error(result, 1, "cannot connect to postgresql://alice:***@/flows")
    assert line.startswith("see-persistence writer: ") and "s3cret" not in result.stderr
