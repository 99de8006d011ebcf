"""The PostgreSQL writer's counters: the same `writer.*` rows in `counters` as on SQLite.

writer/metrics.py's WriterMetrics keeps them for both writers; this module gives the
PostgreSQL writer what writer/lease.py gives the SQLite one: each transaction timed (a lease
that reports it, as `WriterLease.on_transaction` does) and the rows written in one statement.

What "lock" means here: on SQLite the wait is for the file's write lock (BEGIN IMMEDIATE)
and the hold is how long the writer kept it. PostgreSQL has no lock of the whole database;
what a writer's transaction waits for before it may write is the lease row, which the fence
(`UPDATE writer_lease ... WHERE epoch = ...`) locks until COMMIT. So the wait runs from
before BEGIN until the fence returned (two round trips to the server when nobody else holds
that row), and the hold from then until COMMIT returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ..protocol import statements_postgresql as pgsql
from .metrics import WriterMetrics
from .pg_lease import PostgresLease

log = logging.getLogger("see_persistence.writer")


class MeteredLease(PostgresLease):
    """A PostgresLease that tells `on_transaction(lock_wait_s, hold_s)` after every COMMIT."""

    def __init__(self, url: str, conn: psycopg.Connection[Any], endpoint: str) -> None:
        super().__init__(url, conn, endpoint)
        self.on_transaction: Callable[[float, float], None] | None = None

    @contextmanager
    def transaction(self, now_us: int) -> Iterator[psycopg.Connection[Any]]:
        """As PostgresLease.transaction, timed on CLOCK_MONOTONIC (a wall-clock step is no wait)."""
        started = time.monotonic()
        with super().transaction(now_us) as conn:
            fenced = time.monotonic()  # the body starts once the fence holds the lease row
            yield conn
        committed = time.monotonic()
        if self.on_transaction is not None:
            try:
                self.on_transaction(fenced - started, committed - fenced)
            except Exception:  # after COMMIT: nothing may make the caller take it for a failed one
                log.exception("bookkeeping after a commit failed")


def publish(conn: psycopg.Connection[Any], metrics: WriterMetrics, now_us: int) -> None:
    """Write the counters' rows inside the caller's open transaction; starts a new interval."""
    rows = metrics.rows(now_us)
    conn.execute(pgsql.SET_COUNTERS, ([name for name, _ in rows], [value for _, value in rows]))
