"""The writer on PostgreSQL: the lease by advisory lock, the PULL loop over TCP+CURVE, one
transaction per batch.

The same actor as writer/service.py (decode and check with writer/batch.py, commit a batch
in one transaction fenced by the lease epoch, confirm with commit notices on PUB), without
what belongs to a file: no ipc socket (its path is derived from a database file; a URL names
a server that clients on other machines reach, so the writer listens on TCP with CURVE and
records its endpoints and key in the lease row, where clients look), no file identity checks,
no checkpoints. As on SQLite: the instance liveness sweep (local instances by pid and create
time on this host, instances of other hosts by their heartbeats) and the deletion of old
instance rows (writer/pg_liveness.py); a change-feed notice after every COMMIT, numbered by
the lease row's commit_seq (writer/feed.py); prune jobs in chunks (writer/retention.py with
writer/pg_retention.py's statements). Not here: published counters.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import psycopg
import zmq

from .. import connection, leases
from ..backends import redact_url
from ..keys import KeyPair, KeyStore
from ..protocol import codec, feed, statements
from ..protocol.errors import LeaseLostError
from . import liveness, pg_liveness
from .auth import Authenticator, secure_server
from .batch import BatchResult, PreparedBatch, prepare_burial, prepare_messages
from .feed import describe_batch
from .instances import InstanceRetention
from .lease import HEARTBEAT_INTERVAL_S
from .pg_batch import NeedsCare, PostgresSequenceBook, apply_prepared, is_statement_error
from .pg_lease import PostgresLease, connection_lost
from .pg_retention import POSTGRESQL_PRUNE
from .pg_retention import is_busy as pg_is_busy
from .pg_retention import is_environmental as pg_is_environmental
from .pg_storage import connect, upgrade_schema
from .remote import RemoteInstances
from .retention import PruneRunner
from .service import (
    BATCH_ATTEMPTS_BEFORE_SPLITTING,
    BATCH_MAX_BYTES,
    BATCH_MAX_MESSAGES,
    BATCH_WINDOW_S,
    IDLE_POLL_S,
    PUB_LINGER_MS,
    RECEIVE_HIGH_WATER_MARK,
    RETRY_BACKOFF_MAX_S,
    SHUTDOWN_DRAIN_MAX_MESSAGES,
)

log = logging.getLogger("see_persistence.writer")

DEFAULT_LISTEN = "tcp://127.0.0.1:0"


def _now_us() -> int:
    return time.time_ns() // 1000


class PostgresWriter:
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
        self.standby = standby
        self.batch_max_messages = batch_max_messages
        self.batch_window_s = batch_window_s
        if dead_letters_kept < 1:
            raise ValueError("dead_letters_kept must be at least 1")
        self.dead_letters_kept = dead_letters_kept
        least = statements.DEAD_LETTER_RAW_KEPT_BYTES
        if dead_letter_bytes_kept < least:
            raise ValueError(f"dead_letter_bytes_kept must be at least {least}")
        self.dead_letter_bytes_kept = dead_letter_bytes_kept
        self._tcp_specs = list(listen) if listen else [DEFAULT_LISTEN]
        for spec in self._tcp_specs:
            if spec == connection.IPC:
                raise ValueError(
                    "a PostgreSQL writer listens on TCP only (ipc endpoints are derived from a database"
                    " file): listen on tcp://HOST:PORT"
                )
            connection.split_tcp_endpoint(spec)  # ValueError naming it, before anything starts
            connection.pub_endpoint_for(spec)
        self._keystore = KeyStore(keys_dir)
        self._keys: KeyPair | None = None
        self._auth: Authenticator | None = None
        self._pairs: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._lease: PostgresLease | None = None
        self._context: zmq.Context[Any] | None = None
        self._pull: zmq.Socket[Any] | None = None
        self._pub: zmq.Socket[Any] | None = None
        self._book = PostgresSequenceBook()
        self._instance_retention = InstanceRetention(
            instances_kept_s, delete=pg_liveness.delete_expired_instances
        )
        self._remote = RemoteInstances(remote_silence_s)  # instances of other hosts: heard lately?
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        # The change feed, as on SQLite: what the next transaction changes (None: not described,
        # so its notice is an OVERFLOW and watchers re-read), and the workflows of recent tasks.
        self._feed_next: feed.Coalescer | None = None
        self._workflow_of_task: dict[str, str] = {}
        self._prunes: PruneRunner | None = None
        self.totals: dict[str, int] = {}

    # -- public control -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the writer to finish: commit what it received, release the lease, return."""
        self._stop.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the writer holds the lease and has bound its sockets."""
        return self._ready.wait(timeout)

    @property
    def counters(self) -> dict[str, int]:
        """Totals of this writer's life so far: messages, operations, duplicates, dead letters."""
        return dict(self.totals)

    @property
    def epoch(self) -> int:
        """The lease epoch this writer holds (0 before it holds one)."""
        return self._lease.epoch if self._lease else 0

    def run(self) -> None:
        """Hold the lease and apply what clients send until stopped."""
        restore = self._install_signal_handlers()
        try:
            if not self.initialize():
                return
            while not self._stop.is_set():
                self.loop_once()
            self._drain_on_shutdown()
        finally:
            self.shutdown()
            restore()

    # -- the three phases ---------------------------------------------------------------------

    def initialize(self) -> bool:
        """Connect, create or upgrade the schema, take the lease, then bind. False if stopped standing by."""
        self._conn = connect(self.url)
        upgrade_schema(self._conn, _now_us())
        self._keys = self._keystore.writer_pair()  # refused here, before the lease, if not safe
        self._lease = PostgresLease(self.url, self._conn, self._tcp_specs[0])
        if not self._lease.acquire(standby=self.standby, should_stop=self._stop.is_set):
            return False
        self._lease.on_commit = self._publish_change
        self._context = zmq.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.MAXMSGSIZE, codec.MAX_MESSAGE_BYTES)
        self._pull.setsockopt(zmq.RCVHWM, RECEIVE_HIGH_WATER_MARK)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
        self._listen_tcp()
        self._feed_next = feed.Coalescer()  # no record a watcher shows
        self._lease.record_listeners(_now_us(), self._pairs[0][0], self._pairs, self._keys.public)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
        self._next_sweep = time.monotonic()
        # Prune jobs, in chunks between batches; an unfinished one in the database is taken up at once.
        self._prunes = PruneRunner(
            self._conn_now,
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
            ", ".join(pull for pull, _pub in self._pairs),
        )
        return True

    def loop_once(self) -> None:
        """Wait briefly for messages, commit them as one batch, then renew the lease and sweep if due."""
        assert self._pull is not None
        now = time.monotonic()
        timeout_s = max(0.0, min(IDLE_POLL_S, self._next_heartbeat - now, self._next_sweep - now))
        if self._pull.poll(int(timeout_s * 1000)):
            raws = self._receive_batch()
            if raws:
                self._commit(raws)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
        if now >= self._next_sweep:
            self._next_sweep = now + liveness.SWEEP_INTERVAL_S
            self._sweep()
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
        if self._pub is not None:
            self._pub.close(linger=PUB_LINGER_MS)
            self._pub = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.term()
            self._context = None
        conn = self._lease.conn if self._lease is not None else self._conn
        self._lease = None
        self._conn = None
        if conn is not None:
            conn.close()

    # -- inside the loop ------------------------------------------------------------------------

    def _listen_tcp(self) -> None:
        assert self._pull is not None and self._pub is not None and self._context is not None
        assert self._keys is not None
        # The handler first: a peer that arrived before it would meet no ZAP handler.
        self._auth = Authenticator(self._context, self._keystore)
        self._auth.start()
        for socket in (self._pull, self._pub):
            self._auth.watch(socket)
            secure_server(socket, self._keys.secret)
        for spec in self._tcp_specs:
            pair = []
            for socket, endpoint in ((self._pull, spec), (self._pub, connection.pub_endpoint_for(spec))):
                socket.bind(endpoint)
                pair.append(socket.getsockopt_string(zmq.LAST_ENDPOINT))
            self._pairs.append((pair[0], pair[1]))
            log.info("listening on %s (notices on %s), CURVE key %s", pair[0], pair[1], self._keys.public)

    def _receive_batch(self) -> list[bytes]:
        assert self._pull is not None
        raws: list[bytes] = []
        size = 0
        waited = False
        while len(raws) < self.batch_max_messages and size < BATCH_MAX_BYTES:
            try:
                raw = self._pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                if waited:
                    break
                time.sleep(self.batch_window_s)  # once per batch: let a trickle gather
                waited = True
                continue
            raws.append(raw)
            size += len(raw)
        return raws

    def _conn_now(self) -> psycopg.Connection[Any]:
        assert self._lease is not None
        return self._lease.conn

    def _regain(self) -> None:
        """The connection broke: nothing is held; connect, take the lock again, or raise LeaseLostError."""
        assert self._lease is not None
        self._book.forget()
        log.error("the connection to the database broke: this writer holds no lock until it connects again")
        self._conn = self._lease.regain(self._stop.is_set)

    def _commit(self, raws: list[bytes], burial_reason: str | None = None) -> None:
        """Commit one batch; on a fault of the database keep it and retry with backoff.

        As on SQLite: a batch that fails BATCH_ATTEMPTS_BEFORE_SPLITTING times for what it
        holds is committed in halves, down to the one message at fault, which becomes a dead
        letter. A broken connection is no fault of the batch: the writer connects again and
        takes the lock again before it retries (or exits 4).
        """
        assert self._lease is not None
        backoff_s = 0.05
        failures = 0
        own_failures = 0
        while True:
            now_us = _now_us()
            prepared: PreparedBatch | None = None
            try:
                conn = self._conn_now()
                if burial_reason is not None:
                    prepared = prepare_burial(conn, raws[0], self._book, now_us=now_us, reason=burial_reason)
                else:
                    prepared = prepare_messages(conn, raws, self._book, now_us=now_us)
                    self._hear(prepared, now_us)
                self._feed_next = describe_batch(prepared, self._workflow_of_task)
                result = self._apply(conn, prepared, now_us)
                break
            except LeaseLostError:
                self._book.forget()
                raise
            except Exception as exc:
                self._feed_next = None  # not committed: it describes no later transaction
                if connection_lost(self._conn_now()):
                    self._regain()
                    continue
                environmental = isinstance(exc, psycopg.Error) and not is_statement_error(exc)
                if not environmental:
                    own_failures += 1
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING and burial_reason is not None:
                        log.error("could not bury a message in the dead letters either: %s", exc)
                        return
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING:
                        self._split_failing_batch(raws, exc)
                        return
                    if not isinstance(exc, psycopg.Error):
                        log.exception("applying a batch of %d messages failed", len(raws))
                failures += 1
                if failures == 1:
                    log.error("commit of a batch of %d messages failed, will retry: %s", len(raws), exc)
                if self._stop.wait(backoff_s) and failures > 20:
                    log.error("giving up on a batch of %d messages at shutdown: %s", len(raws), exc)
                    return
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
        if failures:
            log.info("batch committed after %d failed attempts", failures)
        self._book.commit(
            result.committed_seq,
            result.rejected_total,
            registered=result.registered,
            dead_letter_bytes=result.dead_letter_bytes,
        )
        assert prepared is not None
        self._remote.written(prepared.clock_skews)
        self._count(result)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S  # the fence renewed it
        self._publish(result)

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

    def _split_failing_batch(self, raws: list[bytes], exc: BaseException) -> None:
        """Commit a batch that keeps failing in halves; bury a single message that still fails."""
        attempts = BATCH_ATTEMPTS_BEFORE_SPLITTING
        reason = f"the writer failed {attempts} times applying it: {type(exc).__name__}: {exc}"
        if len(raws) == 1:
            log.error("a message failed every attempt; it goes to the dead letters (%s)", reason)
            self._commit(raws, burial_reason=reason)
            return
        log.error("a batch of %d messages keeps failing (%s): committing it in halves", len(raws), reason)
        half = len(raws) // 2
        self._commit(raws[:half])
        self._commit(raws[half:])

    def _count(self, result: BatchResult) -> None:
        for name, value in (
            ("messages", result.messages),
            ("operations", result.operations_applied),
            ("duplicates", result.duplicates),
            ("gaps", result.gaps),
            ("dead_letters", result.dead_letters),
        ):
            self.totals[name] = self.totals.get(name, 0) + value

    def _publish(self, result: BatchResult) -> None:
        epoch = self.epoch
        conn = self._conn_now()
        for instance_id, seq in result.committed_seq.items():
            rejected = result.rejected_total[instance_id]
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, seq, rejected=rejected))
        for instance_id in result.gap_instances - result.committed_seq.keys():
            try:
                seq = self._book.last(conn, instance_id)
                rejected = self._book.rejected(conn, instance_id)
            except psycopg.Error as exc:
                log.warning("could not look up instance %s for its gap notice: %s", instance_id, exc)
                continue
            self._send_notice(
                codec.encode_commit_notice(instance_id, epoch, seq, gap=True, rejected=rejected)
            )
        for instance_id in result.unknown_instances - result.committed_seq.keys():
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, 0, gap=True, unknown=True))

    def _publish_change(self, seq: int) -> None:
        """After the COMMIT numbered `seq`: its feed notice (what the writer said it would change)."""
        committed_at_us = _now_us()
        gathered, self._feed_next = self._feed_next, None
        if gathered is None:
            gathered = feed.Coalescer()
            gathered.overflow_unknown()  # a sweep's changes: watchers re-read
        assert self._lease is not None
        if self._pub is not None:
            notice = gathered.notice(self._lease.feed_id, seq, self.epoch, feed.Flag.NONE, committed_at_us)
            self._send_notice(feed.encode_notice(notice))

    def _send_notice(self, frames: list[bytes]) -> None:
        assert self._pub is not None
        try:
            self._pub.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB drops at a slow subscriber's high-water mark; the client resends and asks again

    def _heartbeat(self) -> None:
        assert self._lease is not None
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
        try:
            self._feed_next = feed.Coalescer()  # a heartbeat changes no record
            self._lease.heartbeat(_now_us())
        except LeaseLostError:
            raise
        except psycopg.Error as exc:
            self._feed_next = None
            if connection_lost(self._conn_now()):
                self._regain()
                return
            log.error("could not renew the lease heartbeat: %s", exc)
            return
        self._send_notice(codec.encode_heartbeat(self.epoch))

    def _add(self, name: str, value: int) -> None:
        if value:
            self.totals[name] = self.totals.get(name, 0) + value

    def _hear(self, prepared: PreparedBatch, now_us: int) -> None:
        """Note whom a batch heard from, and the clock samples of its heartbeats (to store with it)."""
        result = prepared.result
        now = time.monotonic()
        self._remote.heard(result.heard, now)
        for instance_id, sent_at_us in result.heartbeats.items():
            self._remote.clock_sample(instance_id, sent_at_us, now_us, now)
        prepared.clock_skews = self._remote.skews_to_write(result.heartbeats)
        self._add("instance_heartbeats", len(result.heartbeats))

    def _sweep(self) -> None:
        """Mark dead the local instances whose process is gone and the remote ones gone silent,
        abandoning what they left running; delete instance rows past their retention."""
        assert self._lease is not None
        try:
            conn = self._conn_now()
            dead = pg_liveness.find_dead_instances(conn)
            silent = self._remote.silent_among(pg_liveness.live_remote_instances(conn), time.monotonic())
            if dead or silent:
                now_us = _now_us()
                with self._lease.transaction(now_us):
                    for instance in dead + silent:
                        pg_liveness.abandon(conn, instance, now_us)
                self._remote.declared_dead(instance.instance_id for instance in silent)
                self._add("instances_abandoned", len(dead) + len(silent))
        except LeaseLostError:
            raise
        except psycopg.Error as exc:
            if connection_lost(self._conn_now()):
                self._regain()
                return
            log.error("instance liveness sweep failed: %s", exc)
        try:
            deleted = self._instance_retention.run_if_due(self._lease.transaction, _now_us())
        except LeaseLostError:
            raise
        except psycopg.Error as exc:
            if connection_lost(self._conn_now()):
                self._regain()
                return
            log.error("deleting instance rows past their retention failed: %s", exc)
            return
        if deleted:
            self._book.discard(deleted)
            self._remote.forget(deleted)
            self._add("instances_deleted", len(deleted))

    def _drain_on_shutdown(self) -> None:
        """Commit what already waits in the socket, so a clean stop loses nothing it received."""
        assert self._pull is not None
        drained = 0
        while drained < SHUTDOWN_DRAIN_MAX_MESSAGES:
            raws: list[bytes] = []
            while len(raws) < self.batch_max_messages:
                try:
                    raws.append(self._pull.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
            if not raws:
                break
            self._commit(raws)
            drained += len(raws)
        log.info(
            "writer stopping after %d messages (%d drained at shutdown)",
            self.totals.get("messages", 0),
            drained,
        )

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            log.info("received SIGHUP: the writer has no configuration to reload and keeps running")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
