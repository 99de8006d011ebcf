"""What the SQLite writer and the PostgreSQL writer do the same way, written once.

`WriterLoop` is the base of writer/service.py's `Writer` and writer/pg_service.py's
`PostgresWriter`: the public control (stop, wait_ready, epoch), the signal handlers, the
sockets and the TCP listeners, receiving a batch, committing it with retries and splitting,
the commit and change-feed notices, the heartbeat, the liveness sweep, and the drain on
shutdown. What differs by backend (how a batch is applied, which errors are the database's,
what to do when the connection breaks, counters) is a hook the subclass fills in.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import zmq

from .. import connection
from ..keys import KeyPair, KeyStore
from ..protocol import codec, feed, statements
from ..protocol.errors import LeaseLostError
from .auth import Authenticator, plain_server, secure_server
from .batch import BatchResult, PreparedBatch, SequenceBook, prepare_burial, prepare_messages
from .feed import describe_batch
from .instances import InstanceRetention
from .lease import HEARTBEAT_INTERVAL_S
from .metrics import WriterMetrics
from .remote import RemoteInstances

log = logging.getLogger("see_persistence.writer")

BATCH_MAX_MESSAGES = 2048
BATCH_MAX_BYTES = 1024 * 1024  # a message may carry hundreds of operations: bound the work too
BATCH_WINDOW_S = 0.002
IDLE_POLL_S = 0.1  # how long the loop may sleep before it looks at its stop flag again
RETRY_BACKOFF_MAX_S = 2.0
# A batch that fails this often for what it holds (not for the database) is split in halves.
BATCH_ATTEMPTS_BEFORE_SPLITTING = 3
SHUTDOWN_DRAIN_MAX_MESSAGES = 1_000_000
PUB_LINGER_MS = 200
# Messages queued inside ZeroMQ per connected client. Every client keeps what it sent until
# it is committed, so a deep queue here only duplicates it: 10,000 small messages from each of
# 8 paced GUIs took the writer to 142 MB. A full queue pushes back into the clients' outboxes,
# which then send fewer, larger messages: cheaper for the writer exactly when it is behind.
# It counts messages, not bytes (ZeroMQ has no byte limit), and a message may be up to
# MAX_MESSAGE_BYTES: per connected sender this queue may hold 16 x 16 MiB. At 100, a sender of
# 16 MiB messages the writer was slow to apply took it to 615 MB; at 16, 375 MB. A flooding
# GUI's messages carry 512 operations each: 16 of them still fill several batches.
RECEIVE_HIGH_WATER_MARK = 16


def now_us() -> int:
    """The wall clock in microseconds since the epoch (what the writer stamps rows with)."""
    return time.time_ns() // 1000


class WriterLoop:
    """The writer actor's logic common to both backends; subclasses set the attributes and hooks."""

    # Errors of the database (as opposed to this code's): the subclass names its driver's.
    db_errors: tuple[type[BaseException], ...] = ()
    # Errors a gap notice's lookup may meet and log rather than raise (none on SQLite).
    lookup_errors: tuple[type[BaseException], ...] = ()

    standby: bool
    batch_max_messages: int
    batch_window_s: float
    dead_letters_kept: int
    dead_letter_bytes_kept: int
    _stop: threading.Event
    _ready: threading.Event
    _lease: Any  # writer/lease.py's WriterLease or writer/pg_lease.py's PostgresLease
    _context: zmq.Context[Any] | None
    _pull: zmq.Socket[Any] | None
    _pub: zmq.Socket[Any] | None
    _auth: Authenticator | None
    _keys: KeyPair | None
    _keystore: KeyStore | None
    _tcp_specs: list[str]
    _tcp_pairs: list[tuple[str, str]]
    _book: SequenceBook
    _remote: RemoteInstances
    _instance_retention: InstanceRetention
    _feed_next: feed.Coalescer | None
    _workflow_of_task: dict[str, str]
    _next_heartbeat: float
    _metrics: WriterMetrics | None

    def __init__(
        self,
        *,
        standby: bool,
        tcp_specs: list[str],
        batch_max_messages: int,
        batch_window_s: float,
        dead_letters_kept: int,
        dead_letter_bytes_kept: int,
        book: SequenceBook,
        instance_retention: InstanceRetention,
        remote_silence_s: float,
    ) -> None:
        """Check the options both writers take (ValueError) and set up the loop's state."""
        for spec in tcp_specs:
            connection.split_tcp_endpoint(spec)  # ValueError naming it, before anything starts
            connection.pub_endpoint_for(spec)
        self._tcp_specs = tcp_specs
        self.standby = standby
        self.batch_max_messages = batch_max_messages
        self.batch_window_s = batch_window_s
        if dead_letters_kept < 1:
            raise ValueError("dead_letters_kept must be at least 1")
        self.dead_letters_kept = dead_letters_kept
        least = statements.DEAD_LETTER_RAW_KEPT_BYTES  # one row's raw: the newest row always stays
        if dead_letter_bytes_kept < least:
            raise ValueError(f"dead_letter_bytes_kept must be at least {least}")
        self.dead_letter_bytes_kept = dead_letter_bytes_kept
        self._keys = None
        self._auth = None
        self._tcp_pairs = []  # (pull, pub) as bound, port 0 resolved
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._context = None
        self._pull = None
        self._pub = None
        self._book = book
        self._instance_retention = instance_retention
        self._remote = RemoteInstances(remote_silence_s)  # instances of other hosts: heard lately?
        self._next_heartbeat = 0.0
        # The change feed: what the next transaction changes (None: not described, so its
        # notice is an OVERFLOW and watchers re-read), and the workflows of recent tasks.
        self._feed_next = None
        self._workflow_of_task = {}
        self._metrics = None

    # -- public control -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the writer to finish: commit what it received, release the lease, return."""
        self._stop.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the writer holds the lease and has bound its sockets."""
        return self._ready.wait(timeout)

    @property
    def counters(self) -> dict[str, int]:
        """Totals of this writer's life so far: messages, operations, duplicates, dead letters, ..."""
        return dict(self._metrics.totals) if self._metrics else {}

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
            self._stopping()
            self._drain_on_shutdown()
        finally:
            self.shutdown()
            restore()

    # -- the three phases, and hooks ---------------------------------------------------------

    def initialize(self) -> bool:
        """Take the lease, then bind. False if stopped while standing by."""
        raise NotImplementedError

    def loop_once(self) -> None:
        """Wait briefly for messages, commit them as one batch, then do what is due."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release the lease and close sockets and the connection (safe to call twice)."""
        raise NotImplementedError

    def _stopping(self) -> None:
        """The loop ended: about to drain the socket and shut down."""

    def _connection(self) -> Any:
        """The connection the writer applies with now."""
        raise NotImplementedError

    def _apply(self, conn: Any, prepared: PreparedBatch, now_us: int) -> BatchResult:
        """Apply `prepared` in one fenced transaction."""
        raise NotImplementedError

    def _is_environmental(self, exc: BaseException) -> bool:
        """True if `exc` is the database's fault (disk, connection, locks), not the batch's."""
        raise NotImplementedError

    def _regained_after(self, exc: BaseException) -> bool:
        """After a failure: True if the connection had broken and was made again (try again at once)."""
        return False

    def _count(self, name: str, value: int = 1) -> None:
        """Add to one of the writer's totals."""
        if self._metrics is not None:
            self._metrics.count(name, value)

    def _still_alive(self) -> None:
        """Tell a supervisor's watchdog the writer is alive (retrying is not hanging)."""

    def _before_confirming(self) -> None:
        """Last check after a COMMIT, before clients are told of it."""

    def _after_commit(self, result: BatchResult, commit_us: int) -> None:
        """Note a committed batch (counters, checkpoints)."""
        if self._metrics is not None:
            self._metrics.record_batch(result, commit_us)

    def _feed_flags(self) -> feed.Flag:
        """The flags of the next change-feed notice."""
        return feed.Flag.NONE

    def _find_dead(self, conn: Any) -> list[Any]:
        """Live instances of this host whose process is gone."""
        raise NotImplementedError

    def _find_silent(self, conn: Any, now: float) -> list[Any]:
        """Live instances of other hosts not heard from for too long."""
        raise NotImplementedError

    def _abandon(self, conn: Any, instance: Any, now_us: int) -> None:
        """Mark one instance dead and fail what it left running."""
        raise NotImplementedError

    # -- sockets ---------------------------------------------------------------------------------

    def _open_sockets(self) -> None:
        """Make the PULL and PUB sockets (bound by the caller, once it holds the lease)."""
        self._context = zmq.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.MAXMSGSIZE, codec.MAX_MESSAGE_BYTES)
        self._pull.setsockopt(zmq.RCVHWM, RECEIVE_HIGH_WATER_MARK)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)

    def _listen_tcp(self) -> None:
        """Bind PULL and PUB on every TCP address, as CURVE servers behind the allow-list."""
        assert self._pull is not None and self._pub is not None and self._context is not None
        assert self._keys is not None and self._keystore is not None
        # The handler first: a TCP peer that arrived before it would meet no ZAP handler, and
        # ZAP_ENFORCE_DOMAIN makes libzmq refuse it rather than let it in unchecked.
        self._auth = Authenticator(self._context, self._keystore)
        self._auth.start()
        for socket in (self._pull, self._pub):
            self._auth.watch(socket)
        try:
            for spec in self._tcp_specs:
                pair = []
                for socket, endpoint in ((self._pull, spec), (self._pub, connection.pub_endpoint_for(spec))):
                    secure_server(socket, self._keys.secret)
                    socket.bind(endpoint)
                    pair.append(socket.getsockopt_string(zmq.LAST_ENDPOINT))
                self._tcp_pairs.append((pair[0], pair[1]))
                log.info("listening on %s (notices on %s), CURVE key %s", pair[0], pair[1], self._keys.public)
        finally:
            for socket in (self._pull, self._pub):
                plain_server(socket)  # what binds later (ipc, again) binds plain

    def _close_sockets(self) -> None:
        """Close PUB, the ZAP handler and the context (PULL is the caller's, closed first)."""
        if self._pub is not None:
            self._pub.close(linger=PUB_LINGER_MS)
            self._pub = None
        if self._auth is not None:
            self._auth.stop()  # its sockets too must be closed before the context ends
            self._auth = None
        if self._context is not None:
            self._context.term()
            self._context = None

    # -- inside the loop ------------------------------------------------------------------------

    def _receive_batch(self, max_bytes: int = BATCH_MAX_BYTES) -> list[bytes]:
        assert self._pull is not None
        raws: list[bytes] = []
        size = 0
        waited = False
        while len(raws) < self.batch_max_messages and size < max_bytes:
            try:
                raw = self._pull.recv(zmq.NOBLOCK)
                raws.append(raw)
                size += len(raw)
            except zmq.Again:
                if waited:
                    break
                # Once per batch, give a trickle of messages the window to gather in one
                # transaction: one sleep, not a wakeup for every message that arrives in it.
                time.sleep(self.batch_window_s)
                waited = True
        return raws

    def _commit(self, raws: list[bytes], burial_reason: str | None = None) -> None:
        """Commit one batch; on a fault of the database keep it and retry with backoff.

        A batch that fails for what it holds rather than for the database (another error than
        disk full, I/O, locked, ...; or an exception of this code) is tried
        BATCH_ATTEMPTS_BEFORE_SPLITTING times, then committed in halves, down to the one
        message at fault, which becomes a dead letter with the reason: nothing is retried
        forever, and the messages around it commit. `burial_reason` commits `raws` (one
        message) as that dead letter. A broken connection is no fault of the batch: the
        writer connects again (`_regained_after`) before it retries.
        """
        assert self._lease is not None
        backoff_s = 0.05
        failures = 0
        own_failures = 0
        prepared: PreparedBatch | None = None
        while True:
            now = now_us()
            try:
                conn = self._connection()
                if prepared is None and burial_reason is not None:
                    prepared = prepare_burial(conn, raws[0], self._book, now_us=now, reason=burial_reason)
                elif prepared is None:
                    # Outside the transaction: the write lock stays free meanwhile for others.
                    prepared = prepare_messages(conn, raws, self._book, now_us=now)
                    self._hear(prepared, now)
                started_ns = time.monotonic_ns()
                # Before BEGIN: describing the batch needs no lock.
                self._feed_next = describe_batch(prepared, self._workflow_of_task)
                result = self._apply(conn, prepared, now)
                break
            except LeaseLostError:
                self._book.forget()
                raise
            except Exception as exc:
                self._feed_next = None  # not committed: it describes no later transaction
                # Prepared again for the next attempt: the fault may be in preparing, and what
                # it applies is stamped with the time it commits, not of the first attempt.
                prepared = None
                if self._regained_after(exc):
                    continue
                if not self._is_environmental(exc):
                    own_failures += 1
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING and burial_reason is not None:
                        # Not even its dead letter commits: it stays with its client, which sends
                        # it again (and this writer tries again) after its resend timeout.
                        log.error("could not bury a message in the dead letters either: %s", exc)
                        return
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING:
                        self._split_failing_batch(raws, exc)
                        return
                    if not isinstance(exc, self.db_errors):
                        log.exception("applying a batch of %d messages failed", len(raws))
                failures += 1
                self._count("commit_failures")
                if failures == 1:
                    log.error("commit of a batch of %d messages failed, will retry: %s", len(raws), exc)
                self._still_alive()  # alive and retrying: a restart would not help
                if self._stop.wait(backoff_s) and failures > 20:
                    log.error("giving up on a batch of %d messages at shutdown: %s", len(raws), exc)
                    return
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
        if failures:
            log.info("batch committed after %d failed attempts", failures)
        self._before_confirming()
        self._book.commit(
            result.committed_seq,
            result.rejected_total,
            registered=result.registered,
            dead_letter_bytes=result.dead_letter_bytes,
        )
        assert prepared is not None
        self._remote.written(prepared.clock_skews)
        self._after_commit(result, (time.monotonic_ns() - started_ns) // 1000)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S  # the fence renewed it
        self._publish(result)

    def _split_failing_batch(self, raws: list[bytes], exc: BaseException) -> None:
        """Commit a batch that keeps failing in halves; bury a single message that still fails."""
        attempts = BATCH_ATTEMPTS_BEFORE_SPLITTING
        reason = f"the writer failed {attempts} times applying it: {type(exc).__name__}: {exc}"
        self._count("batches_split" if len(raws) > 1 else "messages_buried")
        if len(raws) == 1:
            log.error("a message failed every attempt; it goes to the dead letters (%s)", reason)
            self._commit(raws, burial_reason=reason)
            return
        log.error(
            "a batch of %d messages failed %d times (%s: %s): committing it in halves to find the message"
            " at fault",
            len(raws),
            BATCH_ATTEMPTS_BEFORE_SPLITTING,
            type(exc).__name__,
            exc,
        )
        half = len(raws) // 2
        self._commit(raws[:half])
        self._commit(raws[half:])

    def _publish(self, result: BatchResult) -> None:
        """The commit notices of one batch: each instance's committed seq, gaps, unknown senders."""
        epoch = self.epoch
        conn = self._connection()
        for instance_id, seq in result.committed_seq.items():
            rejected = result.rejected_total[instance_id]
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, seq, rejected=rejected))
        for instance_id in result.gap_instances - result.committed_seq.keys():
            try:
                seq = self._book.last(conn, instance_id)
                rejected = self._book.rejected(conn, instance_id)
            except self.lookup_errors as exc:
                log.warning("could not look up instance %s for its gap notice: %s", instance_id, exc)
                continue
            self._send_notice(
                codec.encode_commit_notice(instance_id, epoch, seq, gap=True, rejected=rejected)
            )
        for instance_id in result.unknown_instances - result.committed_seq.keys():
            # The database has no row of it: register again. gap from 0 makes an older client
            # resend from seq 1, which registers it if that message (its hello) is still held.
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, 0, gap=True, unknown=True))

    def _publish_change(self, seq: int) -> None:
        """After the COMMIT numbered `seq`: its feed notice (what the writer said it would change)."""
        committed_at_us = now_us()
        gathered, self._feed_next = self._feed_next, None
        if gathered is None:
            gathered = feed.Coalescer()
            gathered.overflow_unknown()  # a sweep's changes: watchers re-read
        assert self._lease is not None
        flags = self._feed_flags()
        if self._pub is not None:
            notice = gathered.notice(self._lease.feed_id, seq, self.epoch, flags, committed_at_us)
            self._send_notice(feed.encode_notice(notice))

    def _send_notice(self, frames: list[bytes]) -> None:
        assert self._pub is not None
        try:
            self._pub.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            # PUB never waits and never raises this while XPUB_NODROP is off: at a slow
            # subscriber's high-water mark libzmq drops the notice, and the subscriber sees the
            # gap in commit numbers as a Resync(MISSED). Kept so that a change of socket
            # options can never turn a notice into a stalled commit loop.
            pass

    def _heartbeat(self) -> None:
        assert self._lease is not None
        try:
            self._feed_next = feed.Coalescer()  # a heartbeat changes no record
            self._lease.heartbeat(now_us())
        except self.db_errors as exc:
            self._feed_next = None
            if not self._regained_after(exc):
                log.error("could not renew the lease heartbeat: %s", exc)
            return
        self._send_notice(codec.encode_heartbeat(self.epoch))

    def _hear(self, prepared: PreparedBatch, now_us: int) -> None:
        """Note whom a batch heard from, and the clock samples of its heartbeats (to store with it)."""
        result = prepared.result
        now = time.monotonic()
        self._remote.heard(result.heard, now)
        for instance_id, sent_at_us in result.heartbeats.items():
            self._remote.clock_sample(instance_id, sent_at_us, now_us, now)
        prepared.clock_skews = self._remote.skews_to_write(result.heartbeats)
        if result.heartbeats:
            self._count("instance_heartbeats", len(result.heartbeats))

    def _sweep(self) -> None:
        """Mark dead the local instances whose process is gone and the remote ones gone silent,
        abandoning what they left running; delete instance rows past their retention."""
        assert self._lease is not None
        try:
            conn = self._connection()
            dead = self._find_dead(conn)
            silent = self._find_silent(conn, time.monotonic())
            if dead or silent:
                now = now_us()
                with self._lease.transaction(now):
                    for instance in dead + silent:
                        self._abandon(conn, instance, now)
                self._remote.declared_dead(instance.instance_id for instance in silent)
                self._count("instances_abandoned", len(dead) + len(silent))
        except self.db_errors as exc:
            if self._regained_after(exc):
                return
            log.error("instance liveness sweep failed: %s", exc)
        try:
            deleted = self._instance_retention.run_if_due(self._lease.transaction, now_us())
        except self.db_errors as exc:
            if not self._regained_after(exc):
                log.error("deleting instance rows past their retention failed: %s", exc)
            return
        if deleted:
            self._book.discard(deleted)
            self._remote.forget(deleted)
            self._count("instances_deleted", len(deleted))

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
            self.counters.get("messages", 0),
            drained,
        )

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            # A supervisor's "reload", or a closed terminal: nothing to reload, keep serving.
            log.info("received SIGHUP: the writer has no configuration to reload and keeps running")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        if hasattr(signal, "SIGHUP"):  # not on Windows
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
