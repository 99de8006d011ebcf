"""The faults: SIGKILL the active writer, or SIGSTOP it past the point it is presumed dead.

After a kill the standby must take the lease. After a stop the standby must take it while the
writer is frozen, and the writer, resumed, must find it lost and exit with code 4 (fencing). Each
fault becomes an Action; whatever goes wrong becomes an anomaly in Chaos, which fails the run.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from see_persistence import Reader
from see_persistence.protocol.models import WriterStatus
from see_persistence.writer.lease import LEASE_STALE_AFTER_S

from .observe import POLL_S, holds_wal_write_lock, wait_until, writer_status
from .processes import KILLED_EXIT_TIMEOUT_S, Child, Processes

log = logging.getLogger("see_persistence.chaos")

TAKEOVER_TIMEOUT_S = 30.0  # after a kill, or after a stopped writer was presumed dead
STOP_BEYOND_STALE_S = 1.5  # how long past "presumed dead" a stopped writer stays stopped
RESUME_EXIT_TIMEOUT_S = 10.0  # a resumed writer that lost its lease must exit within this
MEANWHILE_EVERY_S = 0.2  # as often as the supervisor's own loop turns
TAKEOVER_QUIET_S = 0.5  # no other work from this long before a stopped writer is presumed dead


@dataclass
class Action:
    """One thing done to the active writer, and what followed."""

    kind: str  # "kill" or "stop"
    at_s: float  # seconds since the clients were told to go
    pid: int
    epoch: int
    new_pid: int | None = None
    new_epoch: int | None = None
    takeover_s: float | None = None  # kill: from SIGKILL; stop: from the moment it was presumed dead
    stopped_s: float | None = None  # stop: how long it was stopped
    exit_code: int | None = None
    write_lock_held: bool | None = None  # stop: whether it held SQLite's WAL write lock while stopped
    outcome: str = ""  # stop: "exited 4", or what happened instead
    note: str = ""
    until_s: float | None = None  # when the supervisor was done with it (a new writer held the lease)


@dataclass
class Chaos:
    """What the supervisor did, and what it saw go wrong."""

    actions: list[Action] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    duplicates_by_epoch: dict[int, int] = field(default_factory=dict)  # from the writers' counters

    def anomaly(self, text: str) -> None:
        """Record something that went wrong (it fails the run)."""
        log.error("%s", text)
        self.anomalies.append(text)


@dataclass
class Faults:
    """Kills or stops the active writer of `db` and watches the takeover that follows."""

    db: Path
    reader: Reader
    processes: Processes  # the writers among them; their logs name a standby that killed one
    chaos: Chaos  # where actions' anomalies go
    elapsed: Callable[[], float]  # seconds since the clients were told to go
    # What the supervisor keeps doing while a stop holds its loop for seconds (a soak: replace
    # clients, prune); never in the moment a takeover may come, whose time is measured.
    meanwhile: Callable[[], None] = lambda: None
    _meanwhile_at: float = field(default=0.0, init=False)

    def _meanwhile_unless_due(self, presumed_dead_wall: float, holder_seen: bool) -> None:
        """Run `meanwhile` (at most every MEANWHILE_EVERY_S) unless a takeover may be about to come."""
        now = time.monotonic()
        if now - self._meanwhile_at < MEANWHILE_EVERY_S:
            return
        if not holder_seen and time.time() > presumed_dead_wall - TAKEOVER_QUIET_S:
            return
        self._meanwhile_at = now
        self.meanwhile()

    def _new_holder(self, old_epoch: int) -> WriterStatus | None:
        """The lease if a live writer holds it with an epoch above `old_epoch`."""
        status = writer_status(self.reader)
        if status is not None and status.epoch > old_epoch and status.alive:
            return status
        return None

    def kill(self, status: WriterStatus, victim: Child) -> Action:
        """SIGKILL the active writer; wait for the standby to hold the lease."""
        action = Action("kill", round(self.elapsed(), 3), victim.pid, status.epoch)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        action.exit_code = victim.wait_exit(KILLED_EXIT_TIMEOUT_S)
        holder = wait_until(lambda: self._new_holder(status.epoch), TAKEOVER_TIMEOUT_S)
        if holder is None:
            self.chaos.anomaly(f"kill of pid {victim.pid}: no writer took over within {TAKEOVER_TIMEOUT_S} s")
        else:
            action.takeover_s = round(time.monotonic() - killed_at, 4)
            action.new_pid, action.new_epoch = holder.pid, holder.epoch
        return action

    def stop(self, status: WriterStatus, victim: Child) -> Action:
        """SIGSTOP the active writer past the point it is presumed dead, SIGCONT it, expect exit 4."""
        action = Action("stop", round(self.elapsed(), 3), victim.pid, status.epoch)
        stopped_at = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        # Read the heartbeat again once it is stopped: it cannot renew it any more.
        after = writer_status(self.reader)
        heartbeat = after.heartbeat if after is not None and after.epoch == status.epoch else status.heartbeat
        presumed_dead_wall = heartbeat.timestamp() + LEASE_STALE_AFTER_S
        resume_wall = min(
            presumed_dead_wall + STOP_BEYOND_STALE_S, time.time() + LEASE_STALE_AFTER_S + STOP_BEYOND_STALE_S
        )
        time.sleep(POLL_S)
        action.write_lock_held = holds_wal_write_lock(victim.pid, self.db)
        holder: WriterStatus | None = None
        seen_wall = 0.0
        while time.time() < resume_wall:
            holder = holder or self._new_holder(status.epoch)
            seen_wall = seen_wall or (time.time() if holder else 0.0)
            self._meanwhile_unless_due(presumed_dead_wall, holder is not None)
            time.sleep(POLL_S)
        resumed_wall = time.time()
        try:
            os.kill(victim.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # it is gone already (reported below)
        action.stopped_s = round(time.monotonic() - stopped_at, 3)
        taken_while_stopped = holder is not None
        kept_lease = False
        exit_deadline = time.monotonic() + RESUME_EXIT_TIMEOUT_S
        takeover_deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while True:
            if holder is None:
                current = writer_status(self.reader)
                if current is not None and current.epoch > status.epoch and current.alive:
                    holder, seen_wall = current, time.time()
                elif (
                    current is not None
                    and current.epoch == status.epoch
                    and current.pid == victim.pid
                    and current.released is None
                    and current.heartbeat.timestamp() > resumed_wall
                ):
                    kept_lease = True  # it renewed the lease after it resumed: it is the writer again
                    break
            exited = not victim.running()
            now = time.monotonic()
            if (exited and holder is not None) or now >= (takeover_deadline if exited else exit_deadline):
                break
            self._meanwhile_unless_due(presumed_dead_wall, holder is not None)
            time.sleep(POLL_S)
        action.exit_code = victim.process.poll()
        if holder is not None:
            action.takeover_s = round(seen_wall - presumed_dead_wall, 4)
            action.new_pid, action.new_epoch = holder.pid, holder.epoch
            action.note = "taken over while stopped" if taken_while_stopped else "taken over after it resumed"
        lock = {True: "it held", False: "it did not hold", None: "unknown whether it held"}[
            action.write_lock_held
        ]
        if action.exit_code == 4:
            action.outcome = "exited 4"
            return action
        if kept_lease:
            action.outcome = "resumed and kept the lease"
            action.note = "resumed and kept the lease: no standby took over while it was stopped"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid} (epoch {status.epoch}) for {action.stopped_s} s: no standby"
                f" took over within {STOP_BEYOND_STALE_S} s of it being presumed dead ({lock} the"
                " database's write lock while stopped); it resumed and went on as the writer"
            )
        elif action.exit_code is None:
            action.outcome = "did not exit"
            action.note = "still running without the lease; killed by the supervisor"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid}: resumed and did not exit within"
                f" {RESUME_EXIT_TIMEOUT_S} s; killed"
            )
            victim.kill()
        else:
            killer = self.killer_of(victim.pid) if action.exit_code == -signal.SIGKILL else None
            action.outcome = f"exited {action.exit_code}"
            if killer:
                action.outcome = "SIGKILLed by a standby while stopped"
                action.note = f"SIGKILLed while stopped by {killer} (as a frozen holder of the write lock)"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid} (epoch {status.epoch}): exited with {action.exit_code},"
                f" not 4 ({lock} the write lock while stopped"
                + (f"; {killer} SIGKILLed it" if killer else "")
                + (")" if holder else "); no writer took over")
            )
        return action

    def killer_of(self, pid: int) -> str | None:
        """The writer whose log says it killed writer `pid` (a standby killing a frozen holder)."""
        for child in self.processes.children:
            if child.name.startswith("writer-") and child.pid != pid:
                for line in child.log_text().splitlines():
                    if f"pid {pid} " in line and "killing it" in line:
                        return f"{child.name} (pid {child.pid})"
        return None
