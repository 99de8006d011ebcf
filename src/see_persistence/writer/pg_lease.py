"""The writer lease on PostgreSQL: a session advisory lock, and the lease row's epoch as fence.

Exactly one writer, across machines, with PostgreSQL's own primitive: the writer holds
`pg_advisory_lock(WRITER_LOCK_KEY)` on its connection's session. The server releases it when
that session ends, however it ends (the process killed, its machine gone, the connection
cut), so a standby needs no clock to judge the holder dead: it takes the lock and then the
row, with the epoch one higher.

The lock alone is not enough: a writer whose session was cut may still be about to commit
on a new connection, and anyone may edit the row. So every transaction the writer commits
first runs `UPDATE writer_lease ... WHERE epoch = <mine>` (`fence`): no row means another
writer has taken over, and the transaction rolls back (LeaseLostError, exit 4).

A standby polls `pg_try_advisory_lock` every STANDBY_POLL_INTERVAL_S rather than block in
`pg_advisory_lock`: a blocked session answers nothing, so stop() and SIGTERM would have to
cancel it from another thread, and a connection that broke while blocked would go unseen
until the kernel gave up on it. Polling costs one tiny query each 0.1 s and takes over
within that.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from .. import leases
from ..protocol import schema_postgresql, timestamps
from ..protocol.errors import LeaseHeldError, LeaseLostError
from . import lease as file_lease
from .lease import new_feed_id
from .pg_storage import WRITER_LOCK_KEY, connect

log = logging.getLogger("see_persistence.writer")

STANDBY_POLL_INTERVAL_S = 0.1
# How long a writer whose connection broke keeps trying to connect and take the lock again
# (a server restart, a network blip) before it gives up with LeaseLostError (exit 4).
RECONNECT_FOR_S = 30.0
RECONNECT_BACKOFF_MAX_S = 1.0

_LEASE_COLUMNS = "pid, host, epoch, acquired_at, heartbeat_at, released_at"


def _now_us() -> int:
    return time.time_ns() // 1000


def connection_lost(conn: psycopg.Connection[Any]) -> bool:
    """True once `conn` is unusable (so is its session, and the lock it held)."""
    return bool(conn.broken or conn.closed)


class PostgresLease:
    """The writer's lease on one PostgreSQL database, held by the session of `conn`.

    `conn` is the connection every batch commits on: the lock and the commits share one
    session, so a commit can only happen while the lock is held.
    """

    def __init__(self, url: str, conn: psycopg.Connection[Any], endpoint: str) -> None:
        self.url = url
        self.conn = conn
        self.endpoint = endpoint
        self.epoch = 0
        self.commit_seq = 0
        self.feed_id = 0
        self._me = leases.current_process()
        # Told after every COMMIT with its number (the writer's notices).
        self.on_commit: Callable[[int], None] | None = None

    # -- taking it -----------------------------------------------------------------------

    def _holder(self) -> tuple[Any, ...] | None:
        return self.conn.execute(f"SELECT {_LEASE_COLUMNS} FROM writer_lease WHERE id = 1").fetchone()

    def _try_lock(self) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,)).fetchone()
        return bool(row and row[0])

    def acquire(self, *, standby: bool, should_stop: Callable[[], bool]) -> bool:
        """Take the lock, then the row with the next epoch; a standby waits for the lock.

        Returns False if stopped while standing by. Raises LeaseHeldError, naming the holder
        the row records, when another writer holds the lock and this one is not a standby.
        """
        announced = False
        watched: tuple[tuple[Any, Any], float] | None = None  # the holder's last heartbeat, seen when
        while not self._try_lock_or_reconnect(should_stop):
            holder = self._holder()
            if standby and holder is not None:
                beat, now = (holder[2], holder[4]), time.monotonic()
                if watched is None or watched[0] != beat:
                    watched = (beat, now)
                elif now - watched[1] >= file_lease.LEASE_STALE_AFTER_S:
                    self._end_silent_holder(holder, now - watched[1])
                    watched = None
            who = (
                f"pid {holder[0]} on {holder[1]}, epoch {holder[2]}, since {holder[3]}"
                if holder is not None
                else "a writer that has not recorded itself yet"
            )
            if not standby:
                raise LeaseHeldError(
                    f"another writer holds the lease: {who}",
                    pid=holder[0] if holder else None,
                    host=holder[1] if holder else None,
                )
            if not announced:
                log.info("standing by: %s holds the lease", who)
                announced = True
            if should_stop():
                return False
            time.sleep(STANDBY_POLL_INTERVAL_S)
        self._take_row(_now_us())
        return True

    def _end_silent_holder(self, holder: tuple[Any, ...], silent_s: float) -> None:
        """End the server session that holds the lock for a writer that stopped renewing its heartbeat.

        A writer frozen (SIGSTOP, a hung machine whose TCP connection the server still
        believes in) keeps its session, and so the lock, for ever; an idle writer renews its
        heartbeat every HEARTBEAT_INTERVAL_S. Ending the session releases the lock and rolls
        back whatever that writer had begun; if it resumes, its connection is gone and the
        lock taken, and it exits 4 (`regain`). Needs the right to signal that backend (the same
        role, or pg_signal_backend); without it the standby says so and goes on waiting.
        """
        sessions = self.conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid = %s AND objid = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (WRITER_LOCK_KEY >> 32, WRITER_LOCK_KEY & 0xFFFFFFFF),
        ).fetchall()
        for (session,) in sessions:
            log.error(
                "writer pid %s on %s (epoch %s) has not renewed its heartbeat for %.1f s while holding"
                " the lock: ending its database session %s",
                holder[0],
                holder[1],
                holder[2],
                silent_s,
                session,
            )
            try:
                self.conn.execute("SELECT pg_terminate_backend(%s)", (session,))
            except psycopg.errors.InsufficientPrivilege as exc:
                log.error("cannot end the silent writer's session %s: %s", session, exc)

    def _try_lock_or_reconnect(self, should_stop: Callable[[], bool]) -> bool:
        """_try_lock; a connection that broke meanwhile (a server restart) is made again first.

        Holding nothing yet, a standby only has to be connected to try again; a writer that
        cannot connect within RECONNECT_FOR_S gives up with the connection's error.
        """
        deadline = time.monotonic() + RECONNECT_FOR_S
        while True:
            try:
                if connection_lost(self.conn):
                    self.conn = connect(self.url)
                return self._try_lock()
            except psycopg.OperationalError as exc:
                if not connection_lost(self.conn) or time.monotonic() >= deadline or should_stop():
                    raise
                log.warning(
                    "the connection to the database broke while standing by; connecting again: %s", exc
                )
                time.sleep(STANDBY_POLL_INTERVAL_S)

    def _take_row(self, now_us: int) -> None:
        """Holding the lock: write the lease row with the next epoch (the old writer is fenced off)."""
        now = timestamps.format_us(now_us)
        with self.conn.transaction():
            current = self.conn.execute(
                "SELECT epoch, commit_seq, feed_id, pid, host, released_at FROM writer_lease"
                " WHERE id = 1 FOR UPDATE"
            ).fetchone()
            epoch = (int(current[0]) if current else 0) + 1
            commit_seq = int(current[1] or 0) if current else 0
            feed_id = new_feed_id(int(current[2]) if current and current[2] is not None else None)
            self.conn.execute(
                "INSERT INTO writer_lease (id, pid, process_create_time, host, endpoint, epoch,"
                " acquired_at, heartbeat_at, released_at, boot_id, heartbeat_boot_ns, commit_seq,"
                " feed_id, endpoints, public_key, host_id)"
                " VALUES (1, %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, %s, %s, NULL, NULL, %s)"
                " ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid,"
                " process_create_time = EXCLUDED.process_create_time, host = EXCLUDED.host,"
                " endpoint = EXCLUDED.endpoint, epoch = EXCLUDED.epoch, acquired_at = EXCLUDED.acquired_at,"
                " heartbeat_at = EXCLUDED.heartbeat_at, released_at = NULL, boot_id = EXCLUDED.boot_id,"
                " heartbeat_boot_ns = EXCLUDED.heartbeat_boot_ns, commit_seq = EXCLUDED.commit_seq,"
                " feed_id = EXCLUDED.feed_id, endpoints = NULL, public_key = NULL,"
                " host_id = EXCLUDED.host_id",
                file_lease.taken_row(self._me, self.endpoint, epoch, now, commit_seq, feed_id),
            )
        if current is not None and current[5] is None:
            log.warning(
                "took over the lease from pid %s on %s (epoch %s)", current[3], current[4], current[0]
            )
        self.epoch, self.commit_seq, self.feed_id = epoch, commit_seq, feed_id
        log.info("holding the writer lease on PostgreSQL, epoch %d", epoch)

    # -- holding it ----------------------------------------------------------------------

    def fence(self, now: str) -> int:
        """Inside an open transaction: renew the heartbeat and number the commit, or raise LeaseLostError.

        Returns the number this commit will have.
        """
        row = self.conn.execute(
            "UPDATE writer_lease SET heartbeat_at = %s, heartbeat_boot_ns = %s,"
            " commit_seq = COALESCE(commit_seq, 0) + 1"
            " WHERE id = 1 AND epoch = %s AND released_at IS NULL"
            # The transaction's rows take this number from the setting (audit_events.commit_seq's
            # default, protocol/schema_postgresql.py); set here, it costs no round trip.
            " RETURNING commit_seq, set_config(%s, CAST(commit_seq AS text), true)",
            (now, leases.boot_time_ns(), self.epoch, schema_postgresql.COMMIT_SEQ_SETTING),
        ).fetchone()
        if row is None:
            holder = self._holder()
            who = f"pid {holder[0]} on {holder[1]}, epoch {holder[2]}" if holder else "nobody"
            raise LeaseLostError(f"lost the writer lease (epoch {self.epoch}); the lease row now names {who}")
        return int(row[0])

    @contextmanager
    def transaction(self, now_us: int) -> Iterator[psycopg.Connection[Any]]:
        """BEGIN, fence (renewing the heartbeat), the body, COMMIT; rolled back on any exception."""
        with self.conn.transaction():
            pending = self.fence(timestamps.format_us(now_us))
            yield self.conn
        self.commit_seq = pending
        if self.on_commit is not None:
            try:
                self.on_commit(pending)
            except Exception:  # after COMMIT: nothing may make the caller take it for a failed one
                log.exception("bookkeeping after a commit failed")

    def heartbeat(self, now_us: int) -> None:
        """Renew the lease in a transaction of its own (when idle)."""
        with self.transaction(now_us):
            pass

    def record_listeners(
        self, now_us: int, endpoint: str, pairs: list[tuple[str, str]], public_key: str | None
    ) -> None:
        """Record, fenced, where this writer listens: its main endpoint, every pair bound, its key."""
        with self.transaction(now_us):
            self.conn.execute(
                "UPDATE writer_lease SET endpoint = %s, endpoints = %s, public_key = %s WHERE id = 1",
                (endpoint, json.dumps([list(pair) for pair in pairs]), public_key),
            )
        self.endpoint = endpoint

    def release(self, now_us: int) -> None:
        """Give the lease up, if still ours, and the lock with it."""
        now = timestamps.format_us(now_us)
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE writer_lease SET released_at = %s, heartbeat_at = %s WHERE id = 1 AND epoch = %s",
                (now, now, self.epoch),
            )
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_KEY,))
        log.info("released the writer lease (epoch %d)", self.epoch)

    # -- losing the connection -------------------------------------------------------------

    def regain(self, should_stop: Callable[[], bool]) -> psycopg.Connection[Any]:
        """After the connection broke: connect again and take the lock again, with the same epoch.

        Its session gone, this writer held nothing meanwhile; it commits again only once it
        holds the lock again and the row still names its epoch (nobody took over). Raises
        LeaseLostError if another writer took the lock or the row, or if no connection could
        be made for RECONNECT_FOR_S (exit 4: a supervisor or a standby takes it from there).
        """
        try:
            self.conn.close()
        except psycopg.Error:
            pass
        deadline = time.monotonic() + RECONNECT_FOR_S
        backoff_s = 0.05
        last_error = "not tried"
        while not should_stop():
            try:
                conn = connect(self.url)
            except psycopg.OperationalError as exc:
                last_error = str(exc)
                if time.monotonic() >= deadline:
                    break
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_BACKOFF_MAX_S)
                continue
            self.conn = conn
            if not self._try_lock():
                conn.close()
                raise LeaseLostError(
                    f"lost the writer lease (epoch {self.epoch}): its connection broke and another"
                    " session holds the lock now"
                )
            holder = self._holder()
            if holder is None or int(holder[2]) != self.epoch or holder[5] is not None:
                conn.close()
                raise LeaseLostError(
                    f"lost the writer lease (epoch {self.epoch}): its connection broke and the lease"
                    " row no longer names this writer"
                )
            log.warning("connection to the database restored; holding the lease again (epoch %d)", self.epoch)
            return conn
        raise LeaseLostError(
            f"lost the writer lease (epoch {self.epoch}): its connection broke and could not be made"
            f" again within {RECONNECT_FOR_S:g} s ({last_error})"
        )
