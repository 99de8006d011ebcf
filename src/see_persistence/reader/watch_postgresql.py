"""Reader.watch() on PostgreSQL: the Watcher of reader/watch.py over the writer's TCP feed.

The same Watcher, subscribed with CURVE to the PUB endpoint the lease row names (always TCP:
a server has no ipc socket), delivering the same items by the same rules. Only what it reads
of the database differs: through a PostgresReader (its pool of read-only sessions) instead
of a read-only file connection, and without what belongs to a file (its identity, `PRAGMA
data_version`).

With no notice for NOTICE_SILENCE_S, it looks at the lease row's commit number instead of
the file: commits it heard no notice of (a writer killed between COMMIT and its notice, a
subscription still in its handshake) show there, and become one Resync: MISSED for the same
writer's numbering, NEW_WRITER for another's. Changes made to the tables by other programs
are not seen: on PostgreSQL every write of this layer goes through its writer.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..backends import DatabaseURL
from .postgresql import PostgresReader
from .watch import (
    NOTICE_SILENCE_S,
    LookupFailed,
    ResyncCause,
    Watcher,
)

log = logging.getLogger("see_persistence.reader")


class PostgresWatcher(Watcher):
    """A Watcher of a PostgreSQL database (see the module); the same items and guarantees."""

    _always_tcp = True

    def __init__(self, url: DatabaseURL, **options: Any) -> None:
        """Watch the database at `url`; `options` are Watcher's (workflow_id, kinds, ...)."""
        self._url = url
        self._opened = False
        super().__init__(url.redacted(), **options)

    def _new_lease_reader(self) -> Any:
        return PostgresReader(self._url.url)

    def _reader(self) -> PostgresReader:
        reader: PostgresReader = self._lease_reader
        return reader

    def _is_open(self) -> bool:
        return self._opened

    def _close_database(self) -> None:
        self._opened = False  # the lease reader, which did the reading, is closed with the thread

    def _open_file(self) -> None:
        """Start from the lease row's commit number, once the server answers."""
        cursor = self._cursor_now()
        if cursor is None:
            return  # the server does not answer yet: asked again at each check
        self._cursor = cursor
        self._lookups.clear()
        self._opened = True

    def _cursor_now(self) -> tuple[int | None, int] | None:
        """(feed id, last commit number) from the lease row; (None, 0) before any writer; None on an error."""
        reader = self._reader()
        try:
            rows = reader._fetch("SELECT feed_id, commit_seq FROM writer_lease WHERE id = 1")
        except psycopg.errors.UndefinedTable:
            return (None, 0)  # no schema yet: no writer has run
        except reader.read_errors as exc:
            log.debug("watcher of %s: cannot read the lease row: %s", self.db_path, exc)
            return None
        if not rows:
            return (None, 0)
        feed_id, commit_seq = rows[0]
        return (None if feed_id is None else int(feed_id), int(commit_seq or 0))

    def _read_cursor(self) -> tuple[int | None, int]:
        return self._cursor_now() or self._cursor

    def _check_database(self, now: float) -> None:
        """Each poll interval: not started yet? without notices, did the writer commit meanwhile?"""
        if not self._opened:
            self._open_file()
            if self._opened:
                self._resync(ResyncCause.STARTED)
            return
        self.stats.polling = now - self._last_notice > NOTICE_SILENCE_S
        if not self.stats.polling:
            return
        self.stats.data_version_polls += 1  # the lease row is what stands for data_version here
        found = self._cursor_now()
        if found is None or found == self._cursor or found == (None, 0):
            return
        feed_id, seq = found
        if feed_id == self._cursor[0] and seq <= self._cursor[1]:
            return
        if self._receive(0) and self._cursor[0] == feed_id and self._cursor[1] >= seq:
            return  # the notices were on their way after all
        cause = ResyncCause.MISSED if feed_id == self._cursor[0] else ResyncCause.NEW_WRITER
        self._cursor = (feed_id, seq)
        self._resync(cause)

    def _lookup_row(self, sql: str, record_id: str) -> tuple[Any, ...] | None:
        reader = self._reader()
        try:
            rows = reader._fetch(sql, (record_id,))
        except reader.read_errors as exc:
            raise LookupFailed(str(exc)) from exc
        return rows[0] if rows else None
