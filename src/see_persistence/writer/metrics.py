"""The writer's counters, published about once a second in the `counters` table.

Totals cover this writer's life (they restart with each lease epoch); rates and means cover
the interval since the last publication. A Reader and `see-persistence status` read them.
"""

from __future__ import annotations

import sqlite3
import time
from bisect import bisect_left
from dataclasses import dataclass, field

from .batch import BatchResult

PUBLISH_INTERVAL_S = 1.0
PREFIX = "writer."
# Upper bounds (µs, inclusive) of the histograms a soak run reads a p99.9 from:
# `commit_us_bucket_<upper>` counts this writer's batch commits (from before BEGIN to after
# COMMIT) and `hold_us_bucket_<upper>` its write transactions by how long they held the lock,
# each in the first bucket whose bound it does not pass (`..._bucket_inf`: past them all).
BUCKET_BOUNDS_US = tuple(m * 10**e for e in range(2, 8) for m in (1, 2, 5))[:16]

SET_COUNTER = """INSERT INTO counters (name, value) VALUES (?, ?)
    ON CONFLICT(name) DO UPDATE SET value = excluded.value"""


@dataclass
class WriterMetrics:
    """Counters of one writer, and what happened since they were last published."""

    pid: int
    epoch: int
    started_us: int
    totals: dict[str, int] = field(default_factory=dict)
    _interval_started: float = field(default_factory=time.monotonic)
    _interval_operations: int = 0
    _interval_batches: int = 0
    _interval_commit_us: int = 0
    _interval_commit_us_max: int = 0
    _interval_hold_us_max: int = 0
    _interval_lock_wait_us_max: int = 0
    commit_us_longest: int = 0  # of this writer's life
    hold_us_longest: int = 0
    _commit_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS_US) + 1))
    _hold_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS_US) + 1))

    def record_batch(self, result: BatchResult, commit_us: int) -> None:
        """Count one committed batch and how long its transaction took."""
        for name, value in (
            ("messages", result.messages),
            ("operations", result.operations_applied),
            ("batches", 1),
            ("duplicates", result.duplicates),
            ("gaps", result.gaps),
            # Held back: instances the file has no row of, whose message did not register them.
            ("unknown_instance_messages", result.unknown),
            # Dead letters too: messages with an instance id that is another sender's.
            ("not_owner_messages", result.not_owner),
            ("dead_letters", result.dead_letters),
            ("dead_letters_dropped", result.dead_letters_dropped),
        ):
            self.totals[name] = self.totals.get(name, 0) + value
        self._interval_operations += result.operations_applied
        self._interval_batches += 1
        self._interval_commit_us += commit_us
        self._interval_commit_us_max = max(self._interval_commit_us_max, commit_us)
        self.commit_us_longest = max(self.commit_us_longest, commit_us)
        self._commit_buckets[bisect_left(BUCKET_BOUNDS_US, commit_us)] += 1

    def record_transaction(self, lock_wait_s: float, hold_s: float) -> None:
        """Count one write transaction of any kind: how long BEGIN waited, how long it held the lock."""
        hold_us, wait_us = int(hold_s * 1e6), int(lock_wait_s * 1e6)
        self._interval_hold_us_max = max(self._interval_hold_us_max, hold_us)
        self._interval_lock_wait_us_max = max(self._interval_lock_wait_us_max, wait_us)
        self.hold_us_longest = max(self.hold_us_longest, hold_us)
        self._hold_buckets[bisect_left(BUCKET_BOUNDS_US, hold_us)] += 1

    def count(self, name: str, value: int = 1) -> None:
        """Add to one total (commit failures, abandoned instances, ...)."""
        self.totals[name] = self.totals.get(name, 0) + value

    def rows(self, now_us: int) -> list[tuple[str, int]]:
        """The (name, value) rows to publish now; starts a new interval."""
        elapsed = max(time.monotonic() - self._interval_started, 1e-6)
        batches = self._interval_batches
        rows = [
            ("pid", self.pid),
            ("epoch", self.epoch),
            ("started_at_us", self.started_us),
            ("published_at_us", now_us),
            ("operations_per_s", round(self._interval_operations / elapsed)),
            ("batch_operations_mean", self._interval_operations // batches if batches else 0),
            ("commit_us_mean", self._interval_commit_us // batches if batches else 0),
            ("commit_us_max", self._interval_commit_us_max),
            ("commit_us_longest", self.commit_us_longest),
            ("hold_us_max", self._interval_hold_us_max),
            ("lock_wait_us_max", self._interval_lock_wait_us_max),
            ("hold_us_longest", self.hold_us_longest),
            *_buckets("commit_us", self._commit_buckets),
            *_buckets("hold_us", self._hold_buckets),
            *((f"{name}_total", value) for name, value in sorted(self.totals.items())),
        ]
        self._interval_started = time.monotonic()
        self._interval_operations = self._interval_batches = 0
        self._interval_commit_us = self._interval_commit_us_max = 0
        self._interval_hold_us_max = self._interval_lock_wait_us_max = 0
        return [(PREFIX + name, value) for name, value in rows]

    def publish(self, conn: sqlite3.Connection, now_us: int) -> None:
        """Write the rows inside the caller's open transaction."""
        conn.executemany(SET_COUNTER, self.rows(now_us))


def _buckets(family: str, counts: list[int]) -> list[tuple[str, int]]:
    """The rows of one histogram: `<family>_bucket_<upper µs>` and `<family>_bucket_inf`."""
    names = [*(str(bound) for bound in BUCKET_BOUNDS_US), "inf"]
    return [(f"{family}_bucket_{name}", count) for name, count in zip(names, counts, strict=True)]
