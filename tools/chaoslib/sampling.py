"""The sampler: a thread that watches the file and the writers while the run goes on.

Every --sample-every s it notes the WAL's length (from the wal-index), the -wal file's and the
database's size, and the lease holder's RSS (a Sample). Four times a second it reads the counters
the writer publishes about once a second, and keeps each new publication (a Publication).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import wal_index

from see_persistence import Reader
from see_persistence.writer.metrics import PUBLISH_INTERVAL_S

from .observe import file_size, writer_status

MISSED_PUBLICATION_GAP_S = 1.9 * PUBLISH_INTERVAL_S  # wall-clock slack below two intervals
COUNTER_POLL_S = 0.25  # the writer publishes about once a second: four looks catch each publication


@dataclass
class Sample:
    """One look at the file and at the lease holder."""

    at_s: float  # seconds since go
    wal_bytes: int  # the -wal file's size: its high-water mark since the last truncation
    wal_frames: int | None  # the WAL's length now (wal-index header): what WAL_RESTART_PAGES bounds
    db_bytes: int
    pid: int | None
    epoch: int | None
    rss: int | None


@dataclass
class Publication:
    """One publication of the writer's counters: about a second of its work."""

    at_s: float  # when the sampler saw it, seconds since go
    published_us: int
    epoch: int
    values: dict[str, int]
    # Another publication may have come and gone unseen before this one (see Sampler), so its
    # batches are counted here while their longest duration is unknown.
    merged: bool


class Sampler(threading.Thread):
    """Polls the writer's published counters, and looks at the WAL, the file and the writer's RSS."""

    def __init__(self, db: Path, sample_every: float) -> None:
        """Sample `db` and its writers until stop()."""
        super().__init__(daemon=True, name="chaos-sampler")
        self.db = db
        self.sample_every = sample_every
        self.origin = time.monotonic()  # set to the go time before start()
        self.samples: list[Sample] = []
        self.publications: list[Publication] = []
        self.errors = 0
        self._stop_event = threading.Event()
        self._processes: dict[int, psutil.Process] = {}
        self._last_key: tuple[int, int] | None = None
        self._last_published: dict[int, int] = {}  # epoch -> published_at_us last seen

    def run(self) -> None:
        """Sample until stopped; a failed look is counted and the next one tried."""
        reader = Reader(self.db)
        next_sample = time.monotonic()
        try:
            while not self._stop_event.is_set():
                self._poll_counters(reader)
                now = time.monotonic()
                if now >= next_sample:
                    self._sample(reader)
                    next_sample = max(next_sample + self.sample_every, now)
                self._stop_event.wait(COUNTER_POLL_S)
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop sampling (bounded join); a sampler never started is left alone."""
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=10)

    def _poll_counters(self, reader: Reader) -> None:
        try:
            rows = reader.query("SELECT name, value FROM counters WHERE name LIKE 'writer.%'")
        except (FileNotFoundError, sqlite3.Error, ValueError):
            self.errors += 1
            return
        now = time.monotonic()
        values = {str(name): int(value) for name, value in rows if isinstance(value, int)}
        epoch, published = values.get("writer.epoch"), values.get("writer.published_at_us")
        if epoch is None or published is None or (epoch, published) == self._last_key:
            return
        self._last_key = (epoch, published)
        # A writer publishes at least PUBLISH_INTERVAL_S apart, from its start on: a publication
        # can have been missed only if this one is two intervals past the previous one seen (or
        # past the writer's start). Only then are its batches' durations taken as unknown.
        previous = self._last_published.get(epoch, values.get("writer.started_at_us", published))
        self._last_published[epoch] = published
        merged = published - previous >= MISSED_PUBLICATION_GAP_S * 1_000_000
        self.publications.append(Publication(round(now - self.origin, 3), published, epoch, values, merged))

    def _sample(self, reader: Reader) -> None:
        status = writer_status(reader)
        pid = status.pid if status is not None else None
        rss = None
        if pid is not None:
            try:
                process = self._processes.get(pid) or psutil.Process(pid)
                self._processes[pid] = process
                rss = int(process.memory_info().rss)
            except psutil.Error:
                rss = None
        length = wal_index.read(self.db)
        self.samples.append(
            Sample(
                round(time.monotonic() - self.origin, 3),
                file_size(Path(f"{self.db}-wal")),
                length.frames if length is not None else None,
                file_size(self.db),
                pid,
                status.epoch if status is not None else None,
                rss,
            )
        )

