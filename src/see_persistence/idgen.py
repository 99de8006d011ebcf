"""Time-ordered UUIDs for new records: every insert lands at the right edge of its indexes."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

# The text after the version digit for each 12-bit counter value, with its dash: one lookup
# instead of a format call on every id (the caller pays for each one).
_COUNTER_TEXT = tuple(f"{n:03x}-" for n in range(4096))
_LOW_48_BITS = (1 << 48) - 1


def _millisecond_prefix(unix_ms: int) -> str:
    h = f"{unix_ms & _LOW_48_BITS:012x}"
    return f"{h[:8]}-{h[8:]}-7"


def _random_tail(random62: int) -> str:
    """The variant and 62 random bits, as the id's last two groups."""
    return f"{0x8000 | random62 >> 48:04x}-{random62 & _LOW_48_BITS:012x}"


class Uuid7Generator:
    """Generates UUIDv7 text that strictly increases within a process (thread-safe).

    The layout is RFC 9562's: 48 bits of Unix milliseconds, the version, a 12-bit counter
    that starts at a random value below 1024 each millisecond, the variant, 62 random bits
    (the same layout as `protocol.ids.format_uuid7`, built faster). `clock_ns` is for tests.

    The 62 random bits are drawn once per millisecond (and anew after a fork), not once per
    id: within a millisecond the counter alone keeps this process's ids apart (RFC 9562's
    fixed-length dedicated counter, section 6.2), and the random bits keep them apart from
    other processes' ids. A flooding caller then pays for a lookup and two concatenations per
    id, not a format.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._random = random.Random(os.urandom(16))
        self.new_id: Callable[[], str] = self._build(clock_ns)
        # Not secret, only unique: a seeded PRNG is ten times cheaper than os.urandom per id,
        # and reseeding after fork keeps parent and child from repeating each other.
        if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._random.seed(os.urandom(16))
        self._reset_after_fork()

    def _build(self, clock_ns: Callable[[], int]) -> Callable[[], str]:
        # A closure over locals: attribute lookups on self would cost a third of the call.
        lock = threading.Lock()
        acquire, release = lock.acquire, lock.release  # `with lock` costs a third more here
        getrandbits = self._random.getrandbits
        last_ms = 0
        counter = 0
        prefix = ""
        tail = ""

        def reset_after_fork() -> None:
            nonlocal acquire, release, tail
            lock = threading.Lock()  # a thread of the parent may have held it at the fork
            acquire, release = lock.acquire, lock.release
            # The parent goes on counting in this millisecond with its random bits: the
            # child keeps counting (its ids still increase) with bits of its own.
            tail = _random_tail(getrandbits(62))

        def new_id() -> str:
            """Return a new id, greater than every id this generator returned before."""
            nonlocal last_ms, counter, prefix, tail
            now_ms = clock_ns() // 1_000_000
            acquire()
            try:
                if now_ms > last_ms:
                    last_ms = now_ms
                    rand = getrandbits(72)
                    counter = rand & 0x3FF  # a random start leaves room to count up
                    prefix = _millisecond_prefix(now_ms)
                    tail = _random_tail(rand >> 10)
                else:
                    counter += 1
                    if counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                        last_ms += 1
                        counter = 0
                        prefix = _millisecond_prefix(last_ms)
                text = prefix + _COUNTER_TEXT[counter] + tail
            finally:
                release()
            return text

        self._reset_after_fork = reset_after_fork
        return new_id


_GENERATOR = Uuid7Generator()
new_id = _GENERATOR.new_id
