"""Leaving other programs that write the same file a fair turn at SQLite's write lock.

The app's Rust core, or a user's script, may write the database directly. They wait for the
write lock in SQLite's default busy handler (the one Python's `timeout=` and rusqlite's
`busy_timeout` install), which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms
between tries: a writer that begins its next transaction the moment it commits wins nearly
every time, and a waiter got 31 writes through in 40 s beside 4 flooding GUIs, waiting up to
8.6 s. Once another connection is seen to commit (`PRAGMA data_version` moved between two of
this writer's transactions), the writer leaves the lock free after each COMMIT for as long as
such a waiter can be asleep, for POLITE_FOR_S after the last sign of it. The first gap of
each polite spell is the handler's longest sleep: a waiter that began before the writer noticed
anyone may be in it. With nobody else writing it never waits. (`data_version` moves too when
another connection restarts or truncates the WAL in a checkpoint: a spell of courtesy then
costs at most POLITE_FOR_S of smaller batches.)
"""

from __future__ import annotations

import logging
import sqlite3
import time
from bisect import bisect_right
from itertools import accumulate

log = logging.getLogger("see_persistence.writer")

# sqlite3's default busy handler (sqliteDefaultBusyCallback in main.c): the sleep before
# each try, in ms; the last one repeats.
BUSY_HANDLER_DELAYS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
_SLEEP_STARTS_MS = (0, *accumulate(BUSY_HANDLER_DELAYS_MS))[:-1]
POLITE_FOR_S = 2.0  # how long one sign of another writer keeps the writer courteous
# A waiter's wakeup is late by the scheduler's latency on a loaded machine: leave it this too.
WAKEUP_SLACK_S = 0.002


def courtesy_gap_s(held_s: float) -> float:
    """How long to leave the lock free after holding it `held_s`, so that a waiter wakes in the gap.

    A connection that began waiting at most `held_s` ago is in one of the busy handler's
    sleeps that started by then; it tries again before that sleep's length has passed.
    """
    index = bisect_right(_SLEEP_STARTS_MS, held_s * 1000.0) - 1
    delay_ms = BUSY_HANDLER_DELAYS_MS[min(max(index, 0), len(BUSY_HANDLER_DELAYS_MS) - 1)]
    return delay_ms / 1000.0 + WAKEUP_SLACK_S


class LockCourtesy:
    """Tracks whether another connection writes the file, and how long to leave the lock free."""

    def __init__(self) -> None:
        self._data_version: int | None = None
        self._polite_until = 0.0
        self._free_from = 0.0  # CLOCK_MONOTONIC: the end of the last COMMIT
        self._gap_s = 0.0
        self._first_gap = False
        self.other_commits_seen = 0  # transactions of this writer that found another's commit before them
        # Whether the current transaction found one (the change feed flags its notice FOREIGN).
        self.foreign = False

    def polite(self, now: float | None = None) -> bool:
        """True while another writer was seen within the last POLITE_FOR_S."""
        return (time.monotonic() if now is None else now) < self._polite_until

    def wait_turn(self) -> float:
        """Before BEGIN: sleep out what is left of the courtesy gap; return the seconds slept."""
        now = time.monotonic()
        if not self.polite(now):
            return 0.0
        left_s = self._free_from + self._gap_s - now
        if left_s <= 0:
            return 0.0
        time.sleep(left_s)
        return left_s

    def began(self, conn: sqlite3.Connection) -> None:
        """Right after BEGIN IMMEDIATE: did another connection commit since this writer's last COMMIT?"""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        previous, self._data_version = self._data_version, version
        self.foreign = previous is not None and version != previous
        if not self.foreign:
            return
        self.other_commits_seen += 1
        now = time.monotonic()
        if not self.polite(now):
            log.info(
                "another connection writes this database: leaving it a turn at the write lock after each"
                " commit while it does"
            )
            self._first_gap = True
        self._polite_until = now + POLITE_FOR_S

    def committed(self, held_s: float) -> None:
        """Right after COMMIT, which held the lock `held_s` since BEGIN."""
        self._free_from = time.monotonic()
        if self._first_gap:
            self._first_gap = False
            self._gap_s = BUSY_HANDLER_DELAYS_MS[-1] / 1000.0 + WAKEUP_SLACK_S
        else:
            self._gap_s = courtesy_gap_s(held_s)
