"""The Reader's connections: one mode=ro connection per thread, reopened after fork or on another file."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import locations
from ..backends import DatabaseURL
from ..database import open_read_only

log = logging.getLogger("see_persistence.reader")

# How often a thread's connection checks that the path still leads to the file it opened.
FILE_IDENTITY_CHECK_S = 0.5

# A connection must not be used on both sides of a fork. Counting forks in the child is
# cheaper than asking for the pid on every query (os.getpid is a system call).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_count_fork)


class ReadConnection:
    """A database path and, for each thread that reads it, its own `mode=ro` connection in autocommit.

    Autocommit: no read transaction is left open to starve checkpoints. Opening is lazy: a
    file that does not exist yet raises FileNotFoundError (with the path) when first read.
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        self.db_path: Path = locations.resolve_db_path(db_path)
        self.database: Path | DatabaseURL = self.db_path
        """The database read: this file, or a server's URL (whose str() hides the password)."""
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        # (connection, _forks when opened, the file's identity, when it was last compared):
        # a forked child opens its own connection, and so does a thread whose file was
        # deleted, moved away or replaced (by a restore): an open connection keeps reading the
        # old inode, and nothing errors.
        state: list[Any] | None = getattr(self._local, "state", None)
        if state is not None and state[1] == _forks:
            now = time.monotonic()
            if now - state[3] < FILE_IDENTITY_CHECK_S:
                return state[0]  # type: ignore[no-any-return]
            state[3] = now
            if locations.file_identity(self.db_path) == state[2]:
                return state[0]  # type: ignore[no-any-return]
            state[0].close()
            self._local.state = None  # if the open below fails, the next query tries again
            log.info("%s is another file than the one this Reader had open: reopening", self.db_path)
        conn = open_read_only(self.db_path)
        self._local.state = [conn, _forks, locations.file_identity(self.db_path), time.monotonic()]
        self._local.columns = set()  # what this connection has seen of the file's tables
        return conn

    def recheck_file(self) -> None:
        """Make this thread's next query check that the path still leads to the file it has open.

        (Queries check it at most every FILE_IDENTITY_CHECK_S on their own.)
        """
        state: list[Any] | None = getattr(self._local, "state", None)
        if state is not None:
            state[3] = float("-inf")

    def _has(self, table: str, column: str = "id") -> bool:
        """True if the file has `table` with `column` (by default: has the table at all).

        A file may come from the Rust core (the seed's tables only) or an older writer. The
        schema only ever grows, so a column once seen is remembered for the connection and
        never looked up again; one not seen yet is looked up on each call, because a writer
        may upgrade the file at any moment.
        """
        self._conn()  # first: it resets what is remembered when it opens a connection
        seen: set[tuple[str, str]] = self._local.columns
        if (table, column) in seen:
            return True
        names = {row[1] for row in self._fetch(f"PRAGMA table_info({table})")}
        seen.update((table, name) for name in names)
        return column in names

    def _seen(self, table: str, column: str) -> bool:
        """True if this thread's connection has already seen `column` in `table` (no lookup)."""
        return (table, column) in self._local.columns

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn().execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        state = getattr(self._local, "state", None)
        if state is not None:
            state[0].close()
            self._local.state = None
