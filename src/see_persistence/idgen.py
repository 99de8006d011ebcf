"""Time-ordered UUIDs for new records: every insert lands at the right edge of its indexes."""

from __future__ import annotations

import os
import random
import threading
import time

from .protocol.ids import format_uuid7


class Uuid7Generator:
    """Generates UUIDv7 text that strictly increases within a process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        # Not secret, only unique: a seeded PRNG is ten times cheaper than os.urandom per id,
        # and reseeding after fork keeps parent and child from repeating each other.
        self._random = random.Random(os.urandom(16))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(16))
        self._last_ms = 0

    def new_id(self) -> str:
        """Return a new id: 48 bits of milliseconds, a 12-bit counter, 62 random bits."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            rand = self._random.getrandbits(62)
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                self._counter = rand & 0x3FF  # a random start leaves room to count up
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        return format_uuid7(ms, counter, rand)


_GENERATOR = Uuid7Generator()
new_id = _GENERATOR.new_id
