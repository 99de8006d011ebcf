"""The writer's read-write connection: created owner-only, WAL, pragmas, schema upgraded;
and, before any of that, whether the writer may take the file at all."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import locations
from ..database import BUSY_TIMEOUT_MS, open_read_only
from ..protocol import schema, timestamps
from ..protocol.errors import SeePersistenceError

log = logging.getLogger("see_persistence.writer")

JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smbfs", "smb3", "sshfs", "fuse.sshfs", "9p"})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path`, from /proc/mounts (None if unknown)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for fields in entries:
        if len(fields) < 3:
            continue
        mount_point = fields[1]
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fields[2])
    return best[1] if best else None


# Tables whose presence says a file already carries this layer: a writer created them, on
# a file that was new, the seed's, or adopted. Tables beside them are then a newer version's
# or were adopted with them, and are no reason to refuse the file again.
_LAYER_MARKER_TABLES = frozenset({"schema_version", "writer_lease", "instances", "dead_letters"})
_SQLITE_NOTADB = 26


class DatabaseRefused(SeePersistenceError):
    """The writer will not write to this file; the message names it and says why."""


def prepare_database_file(db_path: Path, *, adopt: bool = False) -> None:
    """Check, before anything is written, that the writer may make `db_path` its database.

    Creates a missing parent directory only when it is the built-in default one (~/.s_e_e):
    anywhere else a missing directory is more likely a mistyped path than a wish, and the
    writer would otherwise start a fresh, empty database there. Refuses a file that is not
    SQLite, and an SQLite file holding tables that are neither the seed's nor this layer's
    unless `adopt` (the writer's tables would land in someone else's database). Every error
    names the path.
    """
    refuse_network_filesystem(db_path)
    directory = db_path.parent
    if not directory.is_dir():
        if directory.exists():
            raise NotADirectoryError(f"{directory} is not a directory: no database can be created in it")
        if directory != locations.default_directory():
            raise FileNotFoundError(
                f"directory {directory} does not exist: create it first, or check the path {db_path}"
                f" (the writer creates only {locations.default_directory()} on its own)"
            )
        try:
            directory.mkdir(mode=0o700)
        except OSError as exc:
            raise OSError(f"could not create the directory {directory}: {exc.strerror or exc}") from None
        log.info("created the directory %s", directory)
    if db_path.is_dir():
        raise IsADirectoryError(f"{db_path} is a directory, not a database file")
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates the -wal and -shm files beside the database.
        raise PermissionError(f"permission denied: the writer cannot create files in {directory}")
    if not db_path.exists():
        return
    if not os.access(db_path, os.R_OK | os.W_OK):
        raise PermissionError(f"permission denied: the writer cannot read and write {db_path}")
    if db_path.stat().st_size == 0:
        return  # an empty file, as create_private_file leaves it: SQLite makes it a new database
    tables = _table_names(db_path)
    if tables >= _LAYER_MARKER_TABLES:
        return
    foreign = schema.foreign_tables(tables)
    if not foreign:
        return
    names = ", ".join(foreign)
    tables_are = f"tables {names} are" if len(foreign) > 1 else f"table {names} is"
    if not adopt:
        raise DatabaseRefused(
            f"{db_path} is not a see-persistence database: its {tables_are} neither S_E_E's nor"
            " this layer's; the writer adds its tables to such a file only when told to adopt it"
            " (writer --adopt, or Writer(adopt=True))"
        )
    log.warning("adopting %s: its %s neither S_E_E's nor this layer's", db_path, tables_are)


def _table_names(db_path: Path) -> set[str]:
    """The tables of an existing file, read through a read-only connection (writes nothing)."""
    try:
        conn = open_read_only(db_path)
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _is_not_a_database(exc):
            reason = f"{db_path} is not a see-persistence database: {_first_line(exc)}"
        else:
            reason = f"cannot read {db_path}: {_first_line(exc)}"
        raise DatabaseRefused(reason) from None


def _is_not_a_database(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_NOTADB)
    return "not a database" in str(exc)  # Python 3.10 has no sqlite_errorcode


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def refuse_network_filesystem(db_path: Path) -> None:
    """Raise OSError, naming the path, if `db_path` is on a network filesystem we can detect."""
    fs_type = filesystem_type(db_path)  # a path not there yet: the mount that would hold it
    if fs_type in NETWORK_FILESYSTEMS:
        raise OSError(
            f"{db_path} is on a {fs_type} filesystem: SQLite's WAL mode needs shared memory "
            "that network filesystems do not provide; put the database on a local disk"
        )


def create_private_file(db_path: Path) -> None:
    """Create the database file owner-only before SQLite does (its -wal and -shm copy its mode).

    The directory must exist: whether to create it is prepare_database_file's decision.
    """
    try:
        fd = os.open(db_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def open_write_connection(db_path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open the database for writing with the layer's pragmas; refuse network filesystems."""
    synchronous = synchronous.upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    refuse_network_filesystem(db_path)
    create_private_file(db_path)
    conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise OSError(f"could not put {db_path} in WAL mode (journal_mode is {mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    return conn


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest version recorded in schema_version (0 for a file without the table)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def upgrade_schema(conn: sqlite3.Connection, now_us: int) -> int:
    """Bring the file up to SCHEMA_VERSION in one transaction; return the version found.

    Looks first without a lock: a standby starting beside a busy writer must not compete
    for the write lock (and fail with "database is locked") when there is nothing to do.
    """
    found = schema_version(conn)
    if found >= schema.SCHEMA_VERSION:
        return found
    with immediate_transaction(conn):
        found = schema_version(conn)
        if found >= schema.SCHEMA_VERSION:
            return found
        for statement in schema.upgrade_statements(found):
            conn.execute(statement)
        for table, column, declaration in schema.column_additions(found):
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        conn.execute(schema.version_row_statement(), (schema.SCHEMA_VERSION, timestamps.format_us(now_us)))
    log.info("schema of the database upgraded from version %d to %d", found, schema.SCHEMA_VERSION)
    return found
