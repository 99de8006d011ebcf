"""The writer on PostgreSQL: the lease by advisory lock, the PULL loop over TCP+CURVE, one
transaction per batch.

The same actor as writer/service.py, on the same loop (writer/loop.py: decode and check with
writer/batch.py, commit a batch in one transaction fenced by the lease epoch, confirm with
commit notices on PUB), without
what belongs to a file: no ipc socket (its path is derived from a database file; a URL names
a server that clients on other machines reach, so the writer listens on TCP with CURVE and
records its endpoints and key in the lease row, where clients look), no file identity checks,
no checkpoints. As on SQLite: the instance liveness sweep (local instances by pid and create
time on this host, instances of other hosts by their heartbeats) and the deletion of old
instance rows (writer/pg_liveness.py); a change-feed notice after every COMMIT, numbered by
the lease row's commit_seq (writer/feed.py); prune jobs in chunks (writer/retention.py with
writer/pg_retention.py's statements); the counters published about once a second in a
transaction of their own, as on SQLite (writer/metrics.py, writer/pg_metrics.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from .. import connection, leases
from ..backends import redact_url
from ..keys import KeyStore
from ..protocol import feed, statements
from . import liveness, pg_liveness
from .batch import BatchResult, PreparedBatch
from .instances import InstanceRetention
from .lease import HEARTBEAT_INTERVAL_S
from .loop import BATCH_MAX_MESSAGES, BATCH_WINDOW_S, IDLE_POLL_S, WriterLoop
from .loop import now_us as _now_us
from .metrics import PUBLISH_INTERVAL_S, WriterMetrics
from .pg_batch import NeedsCare, PostgresSequenceBook, apply_prepared, is_statement_error
from .pg_lease import connection_lost
from .pg_metrics import MeteredLease, publish
from .pg_retention import POSTGRESQL_PRUNE
from .pg_retention import is_busy as pg_is_busy
from .pg_retention import is_environmental as pg_is_environmental
from .pg_storage import connect, upgrade_schema
from .remote import RemoteInstances
from .retention import PruneRunner

log = logging.getLogger("see_persistence.writer")

DEFAULT_LISTEN = "tcp://127.0.0.1:0"


class PostgresWriter(WriterLoop):
    """The single writer of one PostgreSQL database. `run()` blocks until `stop()` or SIGTERM/SIGINT.

    Raises LeaseHeldError from run() when another writer holds the lease (unless `standby`,
    which waits and takes over once the holder's session ends), and LeaseLostError when fenced
    off, or when its connection broke and it could not hold the lock again.

    `listen` lists `tcp://HOST:PORT` endpoints (default DEFAULT_LISTEN, loopback on a free
    port: pass an address the clients' machines can reach); each is CURVE-encrypted and open
    only to client keys on the allow-list of `keys_dir` (keys.KeyStore).
    """

    def __init__(
        self,
        url: str,
        *,
        standby: bool = False,
        batch_max_messages: int = BATCH_MAX_MESSAGES,
        batch_window_s: float = BATCH_WINDOW_S,
        dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
        dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
        listen: Sequence[str] | None = None,
        keys_dir: str | None = None,
        instances_kept_s: float = statements.INSTANCES_KEPT_S,
        remote_silence_s: float = leases.REMOTE_SILENCE_S,
    ) -> None:
        self.url = url
        tcp_specs = list(listen) if listen else [DEFAULT_LISTEN]
        if connection.IPC in tcp_specs:
            raise ValueError(
                "a PostgreSQL writer listens on TCP only (ipc endpoints are derived from a database"
                " file): listen on tcp://HOST:PORT"
            )
        super().__init__(
            standby=standby,
            tcp_specs=tcp_specs,
            batch_max_messages=batch_max_messages,
            batch_window_s=batch_window_s,
            dead_letters_kept=dead_letters_kept,
            dead_letter_bytes_kept=dead_letter_bytes_kept,
            book=PostgresSequenceBook(),
            instance_retention=InstanceRetention(
                instances_kept_s, delete=pg_liveness.delete_expired_instances
            ),
            remote_silence_s=remote_silence_s,
        )
        self._keystore = KeyStore(keys_dir)
        self._conn: psycopg.Connection[Any] | None = None
        self._lease: MeteredLease | None = None
        self._next_sweep = 0.0
        self._next_publish = 0.0
        self._prunes: PruneRunner | None = None

    # -- which errors are the database's (writer/loop.py) --------------------------------------

    db_errors = (psycopg.Error,)
    lookup_errors = (psycopg.Error,)

    # -- the three phases ---------------------------------------------------------------------

    def initialize(self) -> bool:
        """Connect, create or upgrade the schema, take the lease, then bind. False if stopped standing by."""
        self._conn = connect(self.url)
        upgrade_schema(self._conn, _now_us())
        assert self._keystore is not None
        self._keys = self._keystore.writer_pair()  # refused here, before the lease, if not safe
        self._lease = MeteredLease(self.url, self._conn, self._tcp_specs[0])
        if not self._lease.acquire(standby=self.standby, should_stop=self._stop.is_set):
            return False
        self._lease.on_commit = self._publish_change
        self._metrics = WriterMetrics(
            pid=leases.current_process().pid, epoch=self._lease.epoch, started_us=_now_us()
        )
        self._lease.on_transaction = self._metrics.record_transaction
        self._open_sockets()
        assert self._pull is not None
        self._listen_tcp()
        self._feed_next = feed.Coalescer()  # no record a watcher shows
        self._lease.record_listeners(_now_us(), self._tcp_pairs[0][0], self._tcp_pairs, self._keys.public)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
        self._next_sweep = time.monotonic()
        self._next_publish = time.monotonic()
        # Prune jobs, in chunks between batches; an unfinished one in the database is taken up at once.
        self._prunes = PruneRunner(
            self._connection,
            self._lease.transaction,
            self._pull,
            self._stop,
            sql=POSTGRESQL_PRUNE,
            db_errors=(psycopg.Error,),
            environmental=pg_is_environmental,
            busy=pg_is_busy,
        )
        # Remote instances' silence counts from now: they need the time to find this writer.
        self._remote = RemoteInstances(self._remote.silence_s)
        self._ready.set()
        log.info(
            "writer pid %d serving %s on %s",
            leases.current_process().pid,
            redact_url(self.url),
            ", ".join(pull for pull, _pub in self._tcp_pairs),
        )
        return True

    def loop_once(self) -> None:
        """Wait briefly for messages, commit them as one batch, then renew the lease, sweep and
        publish the counters if due."""
        assert self._pull is not None
        now = time.monotonic()
        timeout_s = max(0.0, min(IDLE_POLL_S, self._next_heartbeat - now, self._next_sweep - now))
        if self._pull.poll(int(timeout_s * 1000)):
            raws = self._receive_batch()
            if raws:
                self._commit(raws)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
            self._heartbeat()
        if now >= self._next_sweep:
            self._next_sweep = now + liveness.SWEEP_INTERVAL_S
            self._sweep()
        if now >= self._next_publish:
            self._next_publish = now + PUBLISH_INTERVAL_S
            self._publish_metrics()
        assert self._prunes is not None
        self._prunes.run()

    def shutdown(self) -> None:
        """Release the lease and close sockets and the connection (safe to call twice)."""
        if self._pull is not None:
            self._pull.close(linger=0)
            self._pull = None
        if self._lease is not None and self._lease.epoch and not connection_lost(self._lease.conn):
            try:
                self._lease.release(_now_us())
            except psycopg.Error as exc:
                log.error("could not release the lease: %s", exc)
        self._close_sockets()
        conn = self._lease.conn if self._lease is not None else self._conn
        self._lease = None
        self._conn = None
        if conn is not None:
            conn.close()

    # -- inside the loop ------------------------------------------------------------------------

    def _regain(self) -> None:
        """The connection broke: nothing is held; connect, take the lock again, or raise LeaseLostError."""
        assert self._lease is not None
        self._book.forget()
        log.error("the connection to the database broke: this writer holds no lock until it connects again")
        self._conn = self._lease.regain(self._stop.is_set)

    def _publish_metrics(self) -> None:
        """The counters, in a fenced transaction of their own (as on SQLite, once a second)."""
        assert self._lease is not None and self._metrics is not None
        now_us = _now_us()
        try:
            self._feed_next = feed.Coalescer()  # counters are no record a watcher shows
            with self._lease.transaction(now_us) as conn:
                publish(conn, self._metrics, now_us)
        except psycopg.Error as exc:
            self._feed_next = None
            if not self._regained_after(exc):
                log.error("could not publish the writer's counters: %s", exc)

    def _apply(self, conn: psycopg.Connection[Any], prepared: PreparedBatch, now_us: int) -> BatchResult:
        """One fenced transaction applying `prepared` at once; if anything in it fails, a second,
        careful one (see pg_batch.apply_prepared)."""
        assert self._lease is not None
        kept = {
            "dead_letters_kept": self.dead_letters_kept,
            "dead_letter_bytes_kept": self.dead_letter_bytes_kept,
        }
        for careful in (False, True):
            try:
                with self._lease.transaction(now_us):
                    return apply_prepared(conn, prepared, self._book, careful=careful, **kept)
            except NeedsCare:
                continue  # rolled back: apply it again, carefully
        raise AssertionError("a careful batch never needs more care")

    # -- the loop's hooks (writer/loop.py) -----------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        assert self._lease is not None
        return self._lease.conn

    def _is_environmental(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and not is_statement_error(exc)

    def _regained_after(self, exc: BaseException) -> bool:
        if not connection_lost(self._connection()):
            return False
        self._regain()
        return True

    def _find_dead(self, conn: psycopg.Connection[Any]) -> list[Any]:
        return pg_liveness.find_dead_instances(conn)

    def _find_silent(self, conn: psycopg.Connection[Any], now: float) -> list[Any]:
        return self._remote.silent_among(pg_liveness.live_remote_instances(conn), now)

    def _abandon(self, conn: psycopg.Connection[Any], instance: Any, now_us: int) -> None:
        pg_liveness.abandon(conn, instance, now_us)
