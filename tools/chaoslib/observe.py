"""What the supervisor sees of the writers from outside, and how it waits for it.

The lease as a Reader sees it, SQLite's WAL write lock from /proc/locks, a file's size, and
wait_until: every wait of the run polls a condition against a deadline.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from see_persistence import Reader
from see_persistence.protocol.models import WriterStatus

POLL_S = 0.02


def wait_until(predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or the deadline passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def writer_status(reader: Reader) -> WriterStatus | None:
    """The lease as a Reader sees it; None if there is none yet or the file cannot be read now."""
    try:
        return reader.get_writer_status()
    except (FileNotFoundError, sqlite3.Error):
        return None


def holds_wal_write_lock(pid: int, db: Path) -> bool | None:
    """Whether `pid` holds SQLite's WAL write lock on `db` (byte 120 of the -shm file); None if unknown.

    Read from /proc/locks (Linux), without touching the database: the lock is a POSIX
    record lock, so a process frozen inside a write transaction still holds it.
    """
    try:
        inode = os.stat(f"{db}-shm").st_ino
        with open("/proc/locks", encoding="ascii") as locks:
            entries = [line.split() for line in locks if "->" not in line]
    except OSError:
        return None
    return any(
        len(f) >= 8
        and f[3] == "WRITE"
        and f[4] == str(pid)
        and f[5].rsplit(":", 1)[-1] == str(inode)
        and f[6] == "120"
        for f in entries
    )


def file_size(path: Path) -> int:
    """A file's size, 0 if it does not exist (the WAL between two lives of the file)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0

