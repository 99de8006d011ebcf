"""The benchmark's files: the writer's schema in a fresh file, bytes in use, raw copies, removal."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from .figures import Cell


def create_schema(db: Path) -> None:
    """Create the layer's tables and indexes (what the writer creates) in a fresh file, in WAL."""
    from see_persistence.writer.storage import upgrade_schema

    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        upgrade_schema(conn, time.time_ns() // 1000)  # the writer's own upgrade, column additions too
    finally:
        conn.close()


def used_bytes(db: Path) -> int:
    """Bytes of the file's pages in use, after a checkpoint (no process may be writing)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)
    finally:
        conn.close()


def count_rows(db: Path, table: str) -> int:
    """COUNT(*) of one table."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def raw_copy_bytes(src: Path, dst: Path) -> int:
    """Insert the same rows, in the same order, into a fresh file with the same schema; its bytes in use."""
    from see_persistence.protocol.schema import SEED_TABLES

    create_schema(dst)
    conn = sqlite3.connect(str(dst), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{quote(str(src))}?mode=ro",))
        conn.execute("BEGIN")
        for table in SEED_TABLES:
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table} ORDER BY rowid")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    return used_bytes(dst)


def measure_disk(cell: Cell, db: Path, raw: bool) -> None:
    """Bytes per event (audit) or per workflow (mix), and the same rows inserted raw."""
    table = "audit_events" if cell.workload == "audit" else "workflow_executions"
    cell.rows = count_rows(db, table)
    if not cell.rows:
        return
    cell.bytes_per_unit = used_bytes(db) / cell.rows
    if raw:
        copy = db.with_name("raw-copy.db")
        cell.raw_bytes_per_unit = raw_copy_bytes(db, copy) / cell.rows
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{copy}{suffix}").unlink()


def remove_db(db: Path) -> None:
    """Delete a benchmark database and its -wal/-shm files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{db}{suffix}").unlink()


def open_raw_read_only(db: Path) -> sqlite3.Connection:
    """A read-only sqlite3 connection (mode=ro, autocommit) with a 5 s busy timeout."""
    conn = sqlite3.connect(
        f"file:{quote(str(db))}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
