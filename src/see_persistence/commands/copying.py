"""Consistent online copies with SQLite's backup API, and the file handling around them."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..database import open_read_only
from ..protocol import timestamps
from .common import sidecar

log = logging.getLogger("see_persistence.cli.copy")

DEFAULT_STEP_PAGES = 1024
SIDECARS = ("-wal", "-shm", "-journal")

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


def create_private_file(path: Path) -> None:
    """Create an empty file readable and writable by the owner only; FileExistsError if it exists."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_with_sidecars(path: Path) -> None:
    """Delete a database file and any -wal, -shm or -journal beside it."""
    for candidate in (path, *(sidecar(path, suffix) for suffix in SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)


@contextmanager
def no_leftover_sidecars(path: Path) -> Iterator[None]:
    """Remove the empty -wal and the -shm a read-only look at a WAL file leaves, if it made them.

    Opening a WAL-mode file, even read-only, creates them; a user's backup file should not
    sprout files because we checked it. A -wal that holds data is never touched.
    """
    before = {suffix: sidecar(path, suffix).exists() for suffix in ("-wal", "-shm")}
    try:
        yield
    finally:
        wal, shm = sidecar(path, "-wal"), sidecar(path, "-shm")
        wal_size = wal.stat().st_size if wal.exists() else 0
        if wal_size == 0:  # with no frames in the WAL, its index is meaningless
            if not before["-wal"]:
                with contextlib.suppress(FileNotFoundError):
                    wal.unlink()
            if not before["-shm"]:
                with contextlib.suppress(FileNotFoundError):
                    shm.unlink()


def copy_online(
    source: Path, dest: Path, step_pages: int = DEFAULT_STEP_PAGES, progress: Progress | None = None
) -> int:
    """Copy the database `source` into the empty file `dest`; returns the number of pages.

    The copy is one consistent snapshot even while a writer commits: a read transaction held
    on the source across every backup step pins the snapshot, so the steps never restart.
    The copy is left in rollback-journal mode, one self-contained file, with its lease
    marked released.
    """
    src = open_read_only(source)
    try:
        dst = sqlite3.connect(str(dest), isolation_level=None)
        try:
            src.execute("BEGIN")
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            try:

                def report(status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                src.backup(dst, pages=step_pages, progress=report)
            finally:
                src.execute("ROLLBACK")
            _release_lease(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        finally:
            dst.close()
    finally:
        src.close()
    fsync_path(dest)
    log.debug("copied %d pages of %s into %s", pages, source, dest)
    return pages


def _release_lease(conn: sqlite3.Connection) -> None:
    """Mark the copy's lease released: no writer holds a copy, whatever the original's did.

    Left as it was, the lease would name the original's writer, which is alive, and a
    restore or a writer on the copy would take that process for the copy's writer.
    """
    has_lease = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'writer_lease'"
    ).fetchone()
    if has_lease:
        now = timestamps.format_us(time.time_ns() // 1000)
        conn.execute("UPDATE writer_lease SET released_at = ? WHERE released_at IS NULL", (now,))


def integrity_problems(path: Path, limit: int = 10) -> list[str]:
    """What PRAGMA integrity_check finds wrong in `path` (empty when it says ok)."""
    conn = open_read_only(path)
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems
