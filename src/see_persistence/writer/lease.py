"""The writer lease: who may write, taken inside BEGIN IMMEDIATE, fenced by its epoch.

The lease is decided before any socket is bound (a second bind on an ipc path silently
steals it from the first writer), renewed by a heartbeat, and checked inside the same
transaction as every batch, so a writer that lost it can never commit again.

A holder's silence is measured on CLOCK_BOOTTIME when the lease is of this boot, so that no
wall-clock step (an NTP correction, a resume from sleep) makes a heartbeating writer look
dead, nor a frozen one look alive; a standby also counts only the time it has itself watched
the heartbeat stand still (CLOCK_MONOTONIC, which stops while the machine sleeps), so a
machine waking from sleep does not make its writer look silent for the whole nap.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import leases
from ..database import BUSY_TIMEOUT_MS, is_busy
from ..protocol import timestamps
from ..protocol.errors import LeaseHeldError, LeaseLostError
from .courtesy import LockCourtesy
from .storage import immediate_transaction
from .wal_locks import wal_write_lock_holders

log = logging.getLogger("see_persistence.writer")

HEARTBEAT_INTERVAL_S = 0.5
LEASE_STALE_AFTER_S = 5.0  # a holder silent this long is presumed dead (stopped, hung)
STANDBY_POLL_INTERVAL_S = 0.1
# A writer that finds one of its own transactions lasted this long (it was stopped inside it,
# or its disk was that slow) stands aside: others may by then presume it dead, so it leaves
# them the time to take the lease over, and carries on only if none did.
SELF_FENCE_AFTER_S = LEASE_STALE_AFTER_S * 0.8
# After an overrun the writer commits nothing until its heartbeat has looked stale this long
# to everyone: a standby polls every STANDBY_POLL_INTERVAL_S and waits at most
# TAKEOVER_BUSY_TIMEOUT_MS for the lock, so it has had several tries to take over.
STAND_ASIDE_GRACE_S = 1.0
# A holder presumed dead that still keeps the write lock this long was frozen inside a
# transaction and never resumed (a resumed one commits and stands aside at once): kill it.
LOCKED_OUT_KILL_AFTER_S = 10.0
TAKEOVER_BUSY_TIMEOUT_MS = 200  # a takeover attempt waits briefly for the lock, then looks again


@dataclass(frozen=True)
class LeaseRow:
    """The writer_lease row as stored."""

    pid: int
    process_create_time: float
    host: str
    endpoint: str
    epoch: int
    acquired_at: str
    heartbeat_at: str
    released_at: str | None
    boot_id: str | None = None  # the holder's boot (None: written before boot ids were)
    heartbeat_boot_ns: int | None = None  # its last heartbeat on that boot's CLOCK_BOOTTIME
    commit_seq: int | None = None  # the number of the last commit to the file (None: none numbered yet)
    feed_id: int | None = None  # the id of the feed that numbers them, drawn per acquisition


def read_lease(conn: sqlite3.Connection) -> LeaseRow | None:
    """The current lease row, or None if no writer ever held one."""
    row = conn.execute(
        "SELECT pid, process_create_time, host, endpoint, epoch, acquired_at, heartbeat_at, released_at,"
        " boot_id, heartbeat_boot_ns, commit_seq, feed_id FROM writer_lease WHERE id = 1"
    ).fetchone()
    return LeaseRow(*row) if row else None


def taken_row(
    me: leases.ProcessIdentity, endpoint: str, epoch: int, now: str, commit_seq: int, feed_id: int
) -> tuple[object, ...]:
    """The values of a lease row a writer takes: pid, process create time, host, endpoint, epoch,
    acquired and heartbeat times, boot id, heartbeat boot time, commit_seq, feed id, host id."""
    return (
        me.pid,
        me.create_time,
        me.host,
        endpoint,
        epoch,
        now,
        now,
        leases.boot_id(),
        leases.boot_time_ns(),
        commit_seq,
        feed_id,
        leases.host_id(),
    )


def new_feed_id(previous: int | None) -> int:
    """A random feed id (63 bits, so SQLite's signed INTEGER holds it), never `previous` nor 0."""
    while True:
        feed_id = secrets.randbits(63)
        if feed_id not in (0, previous):
            return feed_id


def _heartbeat_of(lease: LeaseRow) -> tuple[int, str, int | None]:
    return (lease.epoch, lease.heartbeat_at, lease.heartbeat_boot_ns)


def holder_silence_s(lease: LeaseRow, now_us: int, watched_s: float | None = None) -> float:
    """How long the holder has been silent: on CLOCK_BOOTTIME if of this boot, else the wall clock.

    `watched_s`, when given, is how long the caller itself has seen this very heartbeat
    stand still, on its CLOCK_MONOTONIC: the silence is then at most that. Every process of
    the machine sleeps alike, so a nap is no silence of the holder's, yet CLOCK_BOOTTIME
    counts it; CLOCK_MONOTONIC does not.
    """
    silent_s = leases.silence_s(_to_us(lease.heartbeat_at), now_us, lease.boot_id, lease.heartbeat_boot_ns)
    return silent_s if watched_s is None else min(silent_s, watched_s)


def holder_is_active(lease: LeaseRow | None, now_us: int, watched_s: float | None = None) -> bool:
    """True if the lease is held by a live process that has heartbeated recently."""
    if lease is None or lease.released_at is not None:
        return False
    if not leases.is_alive(lease.pid, lease.process_create_time, lease.host, lease.boot_id):
        return False
    return holder_silence_s(lease, now_us, watched_s) <= LEASE_STALE_AFTER_S


def _main_file(conn: sqlite3.Connection) -> Path:
    """The path of the main database file `conn` has open."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file)
    raise ValueError("the connection has no main database")


def _is_stopped(pid: int) -> bool:
    """True if `pid` is stopped (SIGSTOP, a debugger): it cannot be about to let a lock go."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _to_us(text: str) -> int:
    moment = timestamps.parse(text)
    return int(moment.timestamp() * 1_000_000)


@dataclass(frozen=True)
class Overrun:
    """A transaction of this writer that lasted longer than SELF_FENCE_AFTER_S (it committed)."""

    seconds: float
    committed_at: float  # CLOCK_MONOTONIC, at the end of its COMMIT


class WriterLease:
    """This process's claim on the writer lease."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        me: leases.ProcessIdentity,
        endpoint: str,
        db_path: Path | None = None,
    ):
        self._conn = conn
        self._me = me
        self.endpoint = endpoint
        self._db_path = db_path if db_path is not None else _main_file(conn)
        self.epoch = 0
        # The change feed: the number of this writer's last COMMIT (moves only once a COMMIT
        # returned) and the id, drawn when the lease was taken, of the feed that numbers them.
        self.commit_seq = 0
        self.feed_id = 0
        self._pending_seq = 0  # the number the open transaction's fence gave it
        # After a failed transaction (a COMMIT that raised may still have been written) the
        # next fence reads the number back from the file rather than trust the count here.
        self._seq_uncertain = False
        # Told the number of every COMMIT just made (the writer publishes its feed notice).
        self.on_commit: Callable[[int], None] | None = None
        self.overrun: Overrun | None = None  # the last overrun not yet stood aside for
        # When set, every transaction leaves other writers of the file their turn (see courtesy.py).
        self.courtesy: LockCourtesy | None = None
        # Told (lock wait s, lock held s) after every COMMIT: the writer's metrics.
        self.on_transaction: Callable[[float, float], None] | None = None
        # Called with a pending overrun before the next transaction begins (the writer's wait).
        self.stand_aside: Callable[[Overrun], None] | None = None
        self._reported_lock_holder: int | None = None
        # The holder's heartbeat as last seen (_heartbeat_of), and when (CLOCK_MONOTONIC) this
        # process first saw it so.
        self._watched: tuple[tuple[int, str, int | None], float] | None = None

    def _watched_s(self, lease: LeaseRow | None) -> float | None:
        """How long this process has seen `lease`'s heartbeat unchanged (None: not seen before)."""
        if lease is None:
            self._watched = None
            return None
        heartbeat = _heartbeat_of(lease)
        now = time.monotonic()
        if self._watched is None or self._watched[0] != heartbeat:
            # A first look has only the clocks to judge by: a writer started beside a holder
            # frozen long ago takes over at once, as before.
            self._watched = (heartbeat, now)
            return None
        return now - self._watched[1]

    def _holder_is_active(self, lease: LeaseRow | None, now_us: int) -> bool:
        return holder_is_active(lease, now_us, self._watched_s(lease))

    def try_acquire(self, now_us: int) -> LeaseRow | None:
        """Take the lease if no active holder has it; return the holder's row if one does.

        Looks without a lock first, so a waiting standby never takes the write lock from the
        active writer; only a lease that looks free is taken, inside BEGIN IMMEDIATE.
        """
        current = read_lease(self._conn)
        watched_s = self._watched_s(current)
        if holder_is_active(current, now_us, watched_s) and not self._is_me(current):
            return current
        with self._busy_timeout(TAKEOVER_BUSY_TIMEOUT_MS), immediate_transaction(self._conn):
            looked_at = current
            current = read_lease(self._conn)
            if current is None or looked_at is None or _heartbeat_of(current) != _heartbeat_of(looked_at):
                watched_s = self._watched_s(current)  # it changed since the look: judge it afresh
            if holder_is_active(current, now_us, watched_s) and not self._is_me(current):
                return current
            epoch = (current.epoch if current else 0) + 1
            # The commit numbers go on from the last one in the file, whoever made it; a new
            # feed id tells every watcher that notices of the old writer end here.
            commit_seq = (current.commit_seq or 0) if current else 0
            feed_id = new_feed_id(current.feed_id if current else None)
            now = timestamps.format_us(now_us)
            self._conn.execute(
                "INSERT OR REPLACE INTO writer_lease (id, pid, process_create_time, host, endpoint,"
                " epoch, acquired_at, heartbeat_at, released_at, boot_id, heartbeat_boot_ns,"
                " commit_seq, feed_id, host_id)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                taken_row(self._me, self.endpoint, epoch, now, commit_seq, feed_id),
            )
        if current is not None and current.released_at is None:
            log.warning(
                "took over the lease from pid %d on %s (epoch %d, last heartbeat %s)",
                current.pid,
                current.host,
                current.epoch,
                current.heartbeat_at,
            )
        self.epoch = epoch
        self.commit_seq = commit_seq
        self.feed_id = feed_id
        self._seq_uncertain = False
        log.info("holding the writer lease, epoch %d (feed %x from commit %d)", epoch, feed_id, commit_seq)
        return None

    def acquire(self, *, standby: bool, should_stop: Callable[[], bool]) -> bool:
        """Acquire the lease; a standby waits for it. Returns False if stopped while waiting.

        Raises LeaseHeldError, naming the holder, when another writer is active and this
        one is not a standby.
        """
        announced = False
        locked_out_since: float | None = None
        while True:
            try:
                holder = self.try_acquire(leases.wall_clock_us())
                locked_out_since = None
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                # The lease looks free, yet someone holds the write lock: a takeover under
                # way, or a presumed-dead writer frozen inside a transaction (SIGSTOP).
                locked_out_since = locked_out_since or time.monotonic()
                if time.monotonic() - locked_out_since >= LOCKED_OUT_KILL_AFTER_S:
                    self._kill_frozen_holder()
                    locked_out_since = None
                holder = read_lease(self._conn)
                if holder is None:
                    continue
            if holder is None:
                return True
            if not standby:
                raise LeaseHeldError(
                    f"another writer holds the lease: pid {holder.pid} on {holder.host}, "
                    f"epoch {holder.epoch}, since {holder.acquired_at}",
                    pid=holder.pid,
                    host=holder.host,
                )
            if not announced:
                log.info(
                    "standing by: pid %d on %s holds the lease (epoch %d)",
                    holder.pid,
                    holder.host,
                    holder.epoch,
                )
                announced = True
            if should_stop():
                return False
            time.sleep(STANDBY_POLL_INTERVAL_S)

    @contextmanager
    def _busy_timeout(self, milliseconds: int) -> Iterator[None]:
        self._conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _kill_frozen_holder(self) -> None:
        """SIGKILL a stale holder that keeps the write lock: it is presumed dead, yet blocks everyone."""
        holder = read_lease(self._conn)
        if holder is None or self._is_me(holder):
            return
        # Only a process of this boot can be signalled (whatever the host is called now).
        local = leases.of_this_boot(holder.boot_id) or (
            holder.boot_id is None and holder.host == self._me.host
        )
        if not local:
            return
        if self._holder_is_active(holder, leases.wall_clock_us()):
            return  # it woke up and heartbeats again: not frozen
        if not leases.is_alive(holder.pid, holder.process_create_time, holder.host, holder.boot_id):
            return
        if not self._holds_write_lock(holder.pid):
            return
        log.error(
            "writer pid %d (epoch %d) is presumed dead but holds the database's write lock; killing it",
            holder.pid,
            holder.epoch,
        )
        try:
            os.kill(holder.pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # TerminateProcess on Windows
        except ProcessLookupError:
            pass

    def fence(self, now: str) -> None:
        """Inside an open transaction: renew the heartbeat and number the commit, or raise LeaseLostError.

        The file's number goes up by one in the row this UPDATE rewrites anyway; `commit_seq`
        here moves only after the COMMIT (see `transaction`), so a rolled-back one leaves no hole.
        """
        changed = self._conn.execute(
            "UPDATE writer_lease SET heartbeat_at = ?, heartbeat_boot_ns = ?,"
            " commit_seq = COALESCE(commit_seq, 0) + 1"
            " WHERE id = 1 AND epoch = ? AND pid = ? AND released_at IS NULL",
            (now, leases.boot_time_ns(), self.epoch, self._me.pid),
        ).rowcount
        if changed != 1:
            holder = read_lease(self._conn)
            who = f"pid {holder.pid}, epoch {holder.epoch}" if holder else "nobody"
            raise LeaseLostError(f"lost the writer lease (epoch {self.epoch}); it is now held by {who}")
        if self._seq_uncertain:
            row = self._conn.execute("SELECT commit_seq FROM writer_lease WHERE id = 1").fetchone()
            self._pending_seq = int(row[0])
        else:
            self._pending_seq = self.commit_seq + 1

    @contextmanager
    def transaction(self, now_us: int) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE, fence (renewing the heartbeat), the body, then COMMIT.

        Raises LeaseLostError, rolling back, if the lease is no longer ours. A transaction
        that lasted longer than SELF_FENCE_AFTER_S (the writer was stopped inside it, or the
        disk was that slow) still commits: from its fence to its COMMIT the write lock was
        this writer's, so nobody can have taken the lease meanwhile. It is noted in
        `overrun`, and the next transaction, whoever begins it, first calls `stand_aside`
        (see `stand_aside_until`): every commit renews the heartbeat, which would start the
        standbys' watch over.
        """
        overrun = self.overrun
        if overrun is not None and self.stand_aside is not None:
            self.overrun = None
            self.stand_aside(overrun)  # raises LeaseLostError if another writer took over
        # Before BEGIN: a stop while taking the lock counts too. CLOCK_MONOTONIC, as the
        # standbys' watch: no wall-clock step counts, nor a nap of the whole machine (which
        # stops the standbys as well).
        courtesy = self.courtesy
        if courtesy is not None:
            courtesy.wait_turn()
        started = time.monotonic()
        try:
            with immediate_transaction(self._conn):
                began = time.monotonic()
                if courtesy is not None:
                    courtesy.began(self._conn)
                self.fence(timestamps.format_us(now_us))
                yield self._conn
        except BaseException:
            self._seq_uncertain = True
            raise
        committed_at = time.monotonic()
        self.commit_seq = self._pending_seq
        self._seq_uncertain = False
        if committed_at - started > SELF_FENCE_AFTER_S:
            self.overrun = Overrun(committed_at - started, committed_at)
        try:
            if self.on_commit is not None:
                self.on_commit(self.commit_seq)
            if courtesy is not None:
                courtesy.committed(committed_at - began)
            if self.on_transaction is not None:
                self.on_transaction(began - started, committed_at - began)
        except Exception:  # after COMMIT: nothing may make the caller take it for a failed one
            log.exception("bookkeeping after a commit failed")

    def stand_aside_until(self, overrun: Overrun) -> float:
        """When (CLOCK_MONOTONIC) a writer may commit again after `overrun`.

        Its heartbeat must first look stale to every watcher for STAND_ASIDE_GRACE_S: a
        standby's silence counts from when it first saw the heartbeat that COMMIT wrote.
        """
        return overrun.committed_at + LEASE_STALE_AFTER_S + STAND_ASIDE_GRACE_S

    def still_mine(self) -> LeaseRow | None:
        """None if the lease row still names this writer and its epoch; else the row that does not."""
        current = read_lease(self._conn)
        if current is None:
            raise LeaseLostError(f"lost the writer lease (epoch {self.epoch}): the lease row is gone")
        if current.epoch == self.epoch and current.released_at is None and self._is_me(current):
            return None
        return current

    def _holds_write_lock(self, pid: int) -> bool:
        """Whether `pid` holds the write lock; where that cannot be read, whether it is stopped.

        Another program (the Rust core, a user's script) may be the one holding the lock while
        the writer, healthy, waits for it like everyone else.
        """
        holders = wal_write_lock_holders(self._db_path)
        if not holders:
            # Unknown, or nobody seen holding the lock this standby keeps finding busy (a
            # filesystem whose locks /proc/locks names otherwise): judge by the process itself.
            return _is_stopped(pid)
        if pid in holders:
            return True
        others = sorted(holders - {self._me.pid})
        if others and self._reported_lock_holder != others[0]:
            self._reported_lock_holder = others[0]
            log.warning(
                "the database's write lock is held by pid %d, not by the writer pid %d: waiting for it",
                others[0],
                pid,
            )
        return False

    def record_listeners(
        self, now_us: int, endpoint: str, pairs: list[tuple[str, str]], public_key: str | None
    ) -> None:
        """Record, fenced, where this writer listens: its main endpoint, every pair bound, its key."""
        with self.transaction(now_us):
            self._conn.execute(
                "UPDATE writer_lease SET endpoint = ?, endpoints = ?, public_key = ? WHERE id = 1",
                (endpoint, json.dumps([list(pair) for pair in pairs]), public_key),
            )
        self.endpoint = endpoint

    def heartbeat(self, now_us: int) -> None:
        """Renew the lease in a transaction of its own (when idle)."""
        with self.transaction(now_us):
            pass

    def release(self, now_us: int) -> None:
        """Give the lease up, if still ours, so a standby need not wait for it to go stale."""
        now = timestamps.format_us(now_us)
        with immediate_transaction(self._conn):
            self._conn.execute(
                "UPDATE writer_lease SET released_at = ?, heartbeat_at = ?, heartbeat_boot_ns = ?"
                " WHERE id = 1 AND epoch = ? AND pid = ?",
                (now, now, leases.boot_time_ns(), self.epoch, self._me.pid),
            )
        log.info("released the writer lease (epoch %d)", self.epoch)

    def _is_me(self, lease: LeaseRow | None) -> bool:
        return (
            lease is not None
            and lease.pid == self._me.pid
            and abs(lease.process_create_time - self._me.create_time) <= leases.CREATE_TIME_TOLERANCE_S
        )
