"""Liveness of instances on other hosts: alive while the writer hears from them.

psutil sees only this host's pids. An instance whose host id (leases.host_id) is not the
writer's proves it lives by what it sends: every message, and a heartbeat every
leases.INSTANCE_HEARTBEAT_INTERVAL_S while it sends nothing else. Once the writer has heard
nothing of it for `silence_s` (REMOTE_SILENCE_S unless the writer is told otherwise), the
sweep marks it dead and abandons its running workflows and tasks, as for a local instance
whose process is gone. (The constants shared with clients and `status` are in leases.py.)

Silence is measured on this writer's CLOCK_MONOTONIC, from what it heard itself: no wall
clock (neither its own nor the instance's) can make an instance look silent or alive. An
instance this writer has not heard from yet counts as heard when the writer started, so a
writer that takes over gives every remote instance the full silence to reach it (and its
clients the time to find its new endpoints), whatever the file says about an older writer.

Each heartbeat also carries its sender's wall clock. The writer's clock minus it, at
receipt, is the sender's clock offset plus the delay in between (network, queues), which is
never negative: the smallest of the last SKEW_WINDOW samples is the estimate least inflated
by delays (NTP's clock filter picks the sample of least delay for the same reason), and a
step of the sender's clock shows within SKEW_WINDOW heartbeats.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..leases import CLOCK_SKEW_SHOWN_S, REMOTE_SILENCE_S
from .liveness import DeadInstance

log = logging.getLogger("see_persistence.writer")

SKEW_WINDOW = 8
"""How many of an instance's latest heartbeats its clock-skew estimate is taken from."""

SKEW_WRITE_CHANGE_US = 1_000
"""A skew estimate is written again only once it moved this much (or was never written)."""

# The live instances this writer must judge by what it hears: those registered with another
# host id than the one in the lease it holds (:host_id).
LIVE_REMOTE_INSTANCES = (
    "SELECT id, pid, host FROM instances WHERE state = 'live' AND host_id IS NOT NULL AND host_id <> :host_id"
)


@dataclass
class _Heard:
    """What the writer heard of one instance: when last (monotonic), and its latest clock samples."""

    at: float
    samples: deque[int]
    written_skew_us: int | None = None
    skew_logged: bool = False  # its skew went past CLOCK_SKEW_SHOWN_S and was logged


class RemoteInstances:
    """Per instance: when this writer last heard from it, and its clock skew; who fell silent."""

    def __init__(self, silence_s: float = REMOTE_SILENCE_S, *, started: float | None = None) -> None:
        if not silence_s > 0:
            raise ValueError("the silence after which a remote instance is dead must be positive")
        self.silence_s = silence_s
        self.started = time.monotonic() if started is None else started
        self._heard: dict[str, _Heard] = {}
        self._declared_dead: set[str] = set()

    def heard(self, instance_ids: Iterable[str], now: float) -> None:
        """Each of `instance_ids` sent something that was its own (a message or a heartbeat)."""
        for instance_id in instance_ids:
            entry = self._heard.get(instance_id)
            if entry is None:
                self._heard[instance_id] = _Heard(now, deque(maxlen=SKEW_WINDOW))
            else:
                entry.at = now
            if instance_id in self._declared_dead:
                self._declared_dead.discard(instance_id)
                log.warning(
                    "instance %s, marked dead after %g s of silence, is heard again: it is live again"
                    " (the workflows abandoned meanwhile stay failed)",
                    instance_id,
                    self.silence_s,
                )

    def clock_sample(self, instance_id: str, sent_at_us: int, received_at_us: int, now: float) -> None:
        """One heartbeat's clocks: the sender's when it sent it, this writer's when it got here."""
        self.heard((instance_id,), now)
        self._heard[instance_id].samples.append(received_at_us - sent_at_us)

    def skew_us(self, instance_id: str) -> int | None:
        """The writer's clock minus the instance's, estimated (None: no heartbeat of it yet)."""
        entry = self._heard.get(instance_id)
        if entry is None or not entry.samples:
            return None
        return min(entry.samples)

    def skews_to_write(self, instance_ids: Iterable[str]) -> dict[str, int]:
        """Of `instance_ids`, the estimates that moved enough since last written; marked written."""
        changed: dict[str, int] = {}
        for instance_id in instance_ids:
            skew = self.skew_us(instance_id)
            entry = self._heard.get(instance_id)
            if skew is None or entry is None:
                continue
            if entry.written_skew_us is None or abs(skew - entry.written_skew_us) >= SKEW_WRITE_CHANGE_US:
                changed[instance_id] = skew
            large = abs(skew) >= CLOCK_SKEW_SHOWN_S * 1_000_000
            if large and not entry.skew_logged:
                log.warning(
                    "the clock of instance %s is %+.3f s off this writer's: the times of its records"
                    " are its own clock's",
                    instance_id,
                    -skew / 1_000_000,
                )
            entry.skew_logged = large
        return changed

    def written(self, skews: dict[str, int]) -> None:
        """The estimates `skews` are committed (after the COMMIT only)."""
        for instance_id, skew in skews.items():
            entry = self._heard.get(instance_id)
            if entry is not None:
                entry.written_skew_us = skew

    def silent_s(self, instance_id: str, now: float) -> float:
        """How long this writer has heard nothing of `instance_id` (counted from its start at most)."""
        entry = self._heard.get(instance_id)
        return now - (entry.at if entry is not None else self.started)

    def find_silent(self, conn: sqlite3.Connection, host_id: str, now: float) -> list[DeadInstance]:
        """Live instances of other hosts silent for `silence_s` or more, each with why it is dead."""
        return self.silent_among(conn.execute(LIVE_REMOTE_INSTANCES, {"host_id": host_id}).fetchall(), now)

    def silent_among(self, rows: Sequence[Sequence[Any]], now: float) -> list[DeadInstance]:
        """Of `rows` (id, pid, host: every live instance of other hosts), those silent too long."""
        dead = []
        self._drop_unjudged({row[0] for row in rows}, now)
        for instance_id, pid, host in rows:
            silent = self.silent_s(instance_id, now)
            if silent >= self.silence_s:
                reason = (
                    f"abandoned: instance {instance_id} (pid {pid} on {host or 'another host'}) was not heard"
                    f" from for {silent:.1f} s"
                )
                dead.append(DeadInstance(instance_id, pid, reason))
        return dead

    def _drop_unjudged(self, remote_live: set[str], now: float) -> None:
        # Every instance's messages are heard, this host's too: keep only what a sweep may ask
        # for (and what was heard lately: its hello may not be committed yet), so that the map
        # stays as small as the set of live remote instances.
        stale = [
            instance_id
            for instance_id, entry in self._heard.items()
            if instance_id not in remote_live and now - entry.at > 2 * self.silence_s
        ]
        for instance_id in stale:
            del self._heard[instance_id]

    def declared_dead(self, instance_ids: Iterable[str]) -> None:
        """These were marked dead (after the COMMIT): forget them, and say so if they speak again."""
        for instance_id in instance_ids:
            self._heard.pop(instance_id, None)
            self._declared_dead.add(instance_id)

    def forget(self, instance_ids: Iterable[str]) -> None:
        """Instances whose rows were deleted, or that said goodbye: nothing more to judge."""
        for instance_id in instance_ids:
            self._heard.pop(instance_id, None)
            self._declared_dead.discard(instance_id)
