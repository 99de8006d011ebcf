"""Opening a database the commands can trust to be ours, and small facts about its files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from .. import backends, locations
from ..protocol import schema
from .base import CommandError

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

LAYER_TABLES = ("writer_lease", "instances", "dead_letters", "counters")


def describe_sqlite_error(exc: sqlite3.Error) -> str:
    """One line for an SQLite error, without the exception class."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


Database = Path | backends.DatabaseURL
"""What a command's --db is once cli.main resolved it: a file, or (commands that take one) a URL."""


def is_server(db: object) -> bool:
    """True when `db` names a PostgreSQL server rather than an SQLite file."""
    return isinstance(db, backends.DatabaseURL)


def sqlite_only(db: Database, command: str, reason: str, instead: str) -> Path:
    """`db` as a file path; for a URL, CommandError saying why `command` needs a file and what to run."""
    if isinstance(db, backends.DatabaseURL):
        raise CommandError(f"{command} on {db}: {reason}; {instead}")
    return db


def open_database(db: Database, *, accept_damaged: bool = False, single_name: bool = True) -> Reader:
    """A Reader on `db` once the file (or server) is known to hold the S_E_E tables.

    On PostgreSQL: CommandError (one line) for a server that refuses the connection or a
    database without the seed's three tables.

    Raises CommandError (one line) for a missing file, a file that is not SQLite, an SQLite
    file without the seed's three tables, or (unless not `single_name`: a backup made by a
    tool that hard-links its copies) a file with more than one name, before any command
    reads it: SQLite keeps the WAL beside the name, so each name has its own. With
    `accept_damaged`, an SQLite file whose schema cannot be read is returned as it is
    (for `check`, which reports the damage), and only a file that is not SQLite at all is
    refused.
    """
    if isinstance(db, backends.DatabaseURL):
        return _open_server(db)
    if not db.exists():
        raise CommandError(f"no see-persistence database at {db}")
    if db.is_dir():
        raise CommandError(f"{db} is a directory, not a database file")
    if single_name:
        try:
            locations.check_single_name(db)
        except locations.HardLinkedDatabase as exc:
            raise CommandError(str(exc)) from None
    from ..reader import Reader  # here, not at the top: see TYPE_CHECKING above

    reader = Reader(db)
    try:
        names = table_names(reader)
    except sqlite3.DatabaseError as exc:
        if accept_damaged and not _is_not_a_database(exc):
            return reader
        reader.close()
        raise CommandError(f"{db} is not a see-persistence database: {describe_sqlite_error(exc)}") from None
    missing = [name for name in schema.SEED_TABLES if name not in names]
    if missing:
        reader.close()
        raise not_ours(db, missing)
    return reader


def _open_server(db: backends.DatabaseURL) -> Reader:
    from ..reader import Reader  # here, not at the top: see TYPE_CHECKING above

    reader = Reader(db.url)
    try:
        names = table_names(reader)
    except reader.read_errors as exc:
        reader.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot read {db}: {first}") from None
    missing = [name for name in schema.SEED_TABLES if name not in names]
    if missing:
        reader.close()
        raise not_ours(db, missing)
    return reader


_SQLITE_NOTADB = 26


def _is_not_a_database(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_NOTADB)
    return "not a database" in str(exc)  # Python 3.10 has no sqlite_errorcode


def not_ours(db: Database, missing: list[str]) -> CommandError:
    """The error for an SQLite file that lacks some of the S_E_E tables."""
    plural = "s" if len(missing) > 1 else ""
    return CommandError(
        f"{db} is not a see-persistence database (missing table{plural} {', '.join(missing)})"
    )


def table_names(reader: Reader) -> set[str]:
    """The names of the tables in the file (on PostgreSQL: in the session's current schema)."""
    if is_server(getattr(reader, "database", None)):
        sql = "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
        return {row[0] for row in reader.query(sql)}
    return {row[0] for row in reader.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_version(reader: Reader, tables: set[str] | None = None) -> int | None:
    """The highest version recorded in schema_version; None without the table or a row."""
    if tables is None:
        tables = table_names(reader)
    if "schema_version" not in tables:
        return None
    value = reader.query("SELECT MAX(version) FROM schema_version")[0][0]
    return int(value) if value is not None else None


def sidecar(db: Path, suffix: str) -> Path:
    """The -wal or -shm file next to `db`."""
    return db.with_name(db.name + suffix)


def file_size(path: Path) -> int | None:
    """The size of `path` in bytes, or None if it does not exist."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def human_bytes(size: int | None) -> str:
    """A size for people: 0 B, 12.3 KiB, 4.0 MiB."""
    if size is None:
        return "none"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached


def human_duration(seconds: float) -> str:
    """A duration for people: 0.4 s, 42 s, 3 min 20 s, 2 h 05 min, 3 d 4 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
