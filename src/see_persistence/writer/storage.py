"""The writer's read-write connection: created owner-only, WAL, pragmas, schema upgraded."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..database import BUSY_TIMEOUT_MS
from ..protocol import schema, timestamps

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


def create_private_file(db_path: Path) -> None:
    """Create the database file owner-only before SQLite does (its -wal and -shm copy its mode)."""
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    fs_type = filesystem_type(db_path.parent if not db_path.exists() else db_path)
    if fs_type in NETWORK_FILESYSTEMS:
        raise OSError(
            f"{db_path} is on a {fs_type} filesystem: SQLite's WAL mode needs shared memory "
            "that network filesystems do not provide; put the database on a local disk"
        )
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
