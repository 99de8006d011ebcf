"""Bringing the schema up to date at the writer's start, waiting while another process writes.

A standby started beside a writer that was upgrading a large file (3M rows of the Rust core's)
died with "database is locked" after the busy timeout of 5 s, and so did writers a GUI
spawned: the upgrade needs the write lock, which the other writer held for the whole of its
own upgrade. Now a writer that finds the lock held (another process upgrading, or simply
writing) says once what it waits for and tries again, checking its stop flag and its file
between tries; lease election then decides who writes, as before. A non-standby that sees
a live writer hold the lease meanwhile leaves at once, as it would have after the upgrade.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from .. import leases
from ..database import BUSY_TIMEOUT_MS, is_busy
from ..protocol.errors import LeaseHeldError
from .lease import holder_is_active, read_lease
from .storage import upgrade_schema

log = logging.getLogger("see_persistence.writer")

# Each try waits this long for the lock (SQLite's busy handler), then the stop flag and the
# file are checked: a SIGTERM is obeyed within a fraction of a second, not after 5 s.
TRY_BUSY_TIMEOUT_MS = 200
RETRY_INTERVAL_S = 0.1


def upgrade_when_free(
    conn: sqlite3.Connection,
    now_us: Callable[[], int],
    *,
    standby: bool,
    should_stop: Callable[[], bool],
) -> bool:
    """upgrade_schema(conn), trying again while another process holds the write lock.

    Returns False if `should_stop()` said so while waiting (it may also raise, e.g. when the
    file is gone). Unless `standby`, raises LeaseHeldError once the lease is seen held by a
    live writer. Errors other than a busy lock are raised as they come.
    """
    waiting_since: float | None = None
    while True:
        conn.execute(f"PRAGMA busy_timeout = {TRY_BUSY_TIMEOUT_MS}")
        try:
            upgrade_schema(conn, now_us())
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        else:
            if waiting_since is not None:
                log.info(
                    "the write lock is free after %.1f s: schema checked", time.monotonic() - waiting_since
                )
            return True
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.info(
                "another process holds the database's write lock (upgrading its schema, or writing):"
                " waiting for it, then for the lease election"
            )
        if not standby:
            _raise_if_lease_held(conn)
        if should_stop():
            return False
        time.sleep(RETRY_INTERVAL_S)


def _raise_if_lease_held(conn: sqlite3.Connection) -> None:
    """Raise LeaseHeldError, as the election would, if a live writer holds the lease now."""
    try:
        holder = read_lease(conn)
    except sqlite3.Error:
        return  # no lease table yet, or one of an older schema: nobody can hold it as we read it
    if holder is not None and holder_is_active(holder, leases.wall_clock_us()):
        raise LeaseHeldError(
            f"another writer holds the lease: pid {holder.pid} on {holder.host}, "
            f"epoch {holder.epoch}, since {holder.acquired_at}",
            pid=holder.pid,
            host=holder.host,
        )
