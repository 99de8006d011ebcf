"""What the change-feed tests share: taking a watcher's items until enough came, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from see_persistence import Change, Resync, Watcher

ITEM_TIMEOUT_S = 30.0


def collect(watcher: Watcher, done: Callable[[list[Change | Resync]], bool]) -> list[Change | Resync]:
    """Items until `done` says enough (or the deadline fails the test)."""
    items: list[Change | Resync] = []
    deadline = time.monotonic() + ITEM_TIMEOUT_S
    while not done(items):
        assert time.monotonic() < deadline, f"gave up waiting; got {items[-20:]}, {watcher.stats}"
        item = watcher.get(timeout=0.5)
        if item is not None:
            items.append(item)
    return items


def completed(ids: set[str]) -> Callable[[list[Change | Resync]], bool]:
    """Enough once every workflow of `ids` was seen completed."""

    def done(items: list[Change | Resync]) -> bool:
        workflows = [i for i in items if isinstance(i, Change) and i.kind == "workflow"]
        return ids <= {c.id for c in workflows if c.status == "completed"}

    return done
