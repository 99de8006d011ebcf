"""The writer actor: lease, PULL loop, batches in WAL transactions, notices, clean shutdown."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from .. import backends, connection, leases, locations
from ..database import is_environmental
from ..keys import KeyPair, KeyStore
from ..protocol import codec, feed, statements
from ..protocol.errors import LeaseLostError, SeePersistenceError
from . import liveness
from .auth import Authenticator, plain_server, secure_server
from .batch import BatchResult, PreparedBatch, SequenceBook, prepare_burial, prepare_messages
from .checkpointer import WAL_RESTART_PAGES, Checkpointer
from .courtesy import LockCourtesy
from .feed import describe_batch
from .instances import InstanceRetention
from .lease import HEARTBEAT_INTERVAL_S, Overrun, WriterLease
from .metrics import PUBLISH_INTERVAL_S, WriterMetrics
from .notify import SystemdNotifier
from .remote import RemoteInstances
from .retention import PruneRunner
from .storage import DatabaseRefused, open_write_connection, prepare_database_file
from .upgrading import upgrade_when_free

log = logging.getLogger("see_persistence.writer")

BATCH_MAX_MESSAGES = 2048
BATCH_MAX_BYTES = 1024 * 1024  # a message may carry hundreds of operations: bound the work too
# While another program writes the file, smaller transactions: it waits for the one under way.
COURTEOUS_BATCH_MAX_BYTES = 128 * 1024
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
# How often the writer looks whether its path still leads to the file it has open, and whether
# its socket files and directories are still there and its own: a stat or two, once a second.
PATH_CHECK_INTERVAL_S = 1.0
_COMPANION_SUFFIXES = ("-wal", "-shm")


class DatabaseFileGone(SeePersistenceError):
    """The database path no longer leads to the file this writer has open (deleted, moved, replaced)."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclass
class _Listener:
    """The writer's two sockets bound in one socket directory, and the inodes of the files they made."""

    endpoints: locations.Endpoints
    pull_inode: int | None
    pub_inode: int | None

    def intact(self) -> bool:
        """True while both socket files are still the ones this writer bound."""
        pull_path, pub_path = self.endpoints.paths()
        return _inode(pull_path) == self.pull_inode and _inode(pub_path) == self.pub_inode


def _unbind(socket: zmq.Socket[Any], endpoint: str) -> None:
    try:
        socket.unbind(endpoint)
    except zmq.ZMQError:
        pass  # never bound, or its file already gone


def _remove_socket_files_if_ours(listener: _Listener) -> None:
    # libzmq leaves the ipc file behind on close; remove it only if it is still the one we
    # bound (same inode), never a file a newer writer bound at the same path.
    for path, inode in zip(
        listener.endpoints.paths(), (listener.pull_inode, listener.pub_inode), strict=True
    ):
        if inode is not None and _inode(path) == inode:
            try:
                os.unlink(path)
            except OSError:
                pass


def _files_open_as(paths: list[Path]) -> dict[Path, locations.FileIdentity]:
    """Of `paths`, those this process has open under that very name: path -> the open file's identity.

    Read from /proc/self/fd (Linux); a file deleted or renamed since it was opened shows
    under its new name there, so it is not matched. Empty where /proc is not available.
    """
    wanted = {str(path): path for path in paths}
    found: dict[Path, locations.FileIdentity] = {}
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target in wanted:
                info = os.stat(f"/proc/self/fd/{fd}")
                found[wanted[target]] = locations.FileIdentity(info.st_dev, info.st_ino)
        except OSError:
            continue  # closed meanwhile (the fd of the listing itself, say)
    return found


def _where_the_file_went(identity: locations.FileIdentity) -> str:
    """'deleted', 'moved to PATH', or '' if this process has no descriptor of that file (Linux /proc)."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return ""
    for fd in descriptors:
        try:
            info = os.stat(f"/proc/self/fd/{fd}")
            if (info.st_dev, info.st_ino) != identity:
                continue
            if info.st_nlink == 0:
                return "deleted"
            return f"moved to {os.readlink(f'/proc/self/fd/{fd}')}"
        except OSError:
            continue
    return ""


class Writer:
    """The single writer of one database. `run()` blocks until `stop()` or SIGTERM/SIGINT.

    Raises LeaseHeldError from run() when another live writer holds the lease (unless
    `standby`, which waits and takes over), and LeaseLostError when fenced off. Refuses,
    with DatabaseRefused, a file that is not SQLite or holds someone else's tables (unless
    `adopt`), and a missing directory other than the default one (FileNotFoundError); a file
    with more than one name (HardLinkedDatabase); a socket directory that is not the user's
    own (PermissionError). Raises DatabaseFileGone once its path no longer leads to the file
    it has open (deleted, moved or replaced): it then commits and confirms nothing more.

    `listen` names where it listens: "ipc" (the sockets derived from the database path, in
    the owner-only socket directory) and/or `tcp://HOST:PORT` endpoints, CURVE-encrypted and
    open only to client keys on the allow-list of `keys_dir` (keys.KeyStore); the default is
    connection.default_listen(): ipc where libzmq has it, else TCP on a free loopback port.
    The lease row records every endpoint bound and the writer's public key.

    An instance on another host (another leases.host_id) is alive while it is heard from: it
    is marked dead once no message or heartbeat of it arrived for `remote_silence_s`.

    With `exit_when_idle_s` it also stops on its own, as after `stop()`, once no message has
    arrived and no live GUI instance has been seen for that long: a writer a GUI spawned
    should not outlive every GUI. Without it (a supervisor's writer) it runs until stopped.
    """

    def __new__(cls, db_path: str | os.PathLike[str] | None = None, **options: Any) -> Writer:
        """A postgresql:// URL (given, or in $SEE_PERSISTENCE_DB) makes a pg_service.PostgresWriter."""
        database = backends.parse_database(db_path or os.environ.get(locations.DB_ENV_VAR) or "")
        if database is None or cls is not Writer:
            return super().__new__(cls)
        backends.require_backend(database, backends.WRITER_BACKENDS)
        from .pg_service import PostgresWriter

        return PostgresWriter(database.url, **options)  # type: ignore[return-value]

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        standby: bool = False,
        synchronous: str = "NORMAL",
        batch_max_messages: int = BATCH_MAX_MESSAGES,
        batch_window_s: float = BATCH_WINDOW_S,
        dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
        adopt: bool = False,
        exit_when_idle_s: float | None = None,
        instances_kept_s: float = statements.INSTANCES_KEPT_S,
        dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
        listen: Sequence[str] | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        remote_silence_s: float = leases.REMOTE_SILENCE_S,
    ) -> None:
        self.db_path: Path = locations.resolve_db_path(db_path)
        self.endpoints = locations.endpoints_for(self.db_path)
        wanted = list(listen) if listen else connection.default_listen()
        self._listen_ipc = connection.IPC in wanted
        self._tcp_specs = [spec for spec in wanted if spec != connection.IPC]
        for spec in self._tcp_specs:
            connection.split_tcp_endpoint(spec)  # ValueError naming it, before anything starts
            connection.pub_endpoint_for(spec)
        if self._listen_ipc and not zmq.has("ipc"):
            raise ValueError("this build of libzmq has no ipc transport: listen on tcp://... instead")
        self._keystore = KeyStore(keys_dir) if self._tcp_specs else None
        self._keys: KeyPair | None = None
        self._auth: Authenticator | None = None
        self._tcp_pairs: list[tuple[str, str]] = []  # (pull, pub) as bound, port 0 resolved
        self.standby = standby
        self.synchronous = synchronous
        self.batch_max_messages = batch_max_messages
        self.batch_window_s = batch_window_s
        if dead_letters_kept < 1:
            raise ValueError("dead_letters_kept must be at least 1")
        self.dead_letters_kept = dead_letters_kept
        least = statements.DEAD_LETTER_RAW_KEPT_BYTES  # one row's raw: the newest row always stays
        if dead_letter_bytes_kept < least:
            raise ValueError(f"dead_letter_bytes_kept must be at least {least}")
        self.dead_letter_bytes_kept = dead_letter_bytes_kept
        self._instance_retention = InstanceRetention(instances_kept_s)
        self._remote = RemoteInstances(remote_silence_s)  # instances of other hosts: heard lately?
        if exit_when_idle_s is not None and not exit_when_idle_s > 0:
            raise ValueError("exit_when_idle_s must be a positive number of seconds")
        self.adopt = adopt
        self.exit_when_idle_s = exit_when_idle_s
        self._last_needed = time.monotonic()  # the last message, or the last live instance seen
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._lease: WriterLease | None = None
        self._context: zmq.Context[Any] | None = None
        self._pull: zmq.Socket[Any] | None = None
        self._checkpointer: Checkpointer | None = None
        self._pub: zmq.Socket[Any] | None = None
        self._listeners: dict[Path, _Listener] = {}  # socket directory -> what is bound there
        self._refusals: dict[Path, str] = {}  # socket directory -> why it was last refused (logged once)
        self._unreachable_logged = False
        self._file_identity: locations.FileIdentity | None = None  # of the file this writer has open
        self._file_gone: str | None = None  # why the path no longer leads to it, once seen
        self._links_logged = 1
        self._next_file_check = 0.0
        self._next_socket_check = 0.0
        self._book = SequenceBook()
        self._courtesy = LockCourtesy()
        # The change feed: what the next transaction changes (None: not described, so its
        # notice is an OVERFLOW and watchers re-read), and the workflows of recent tasks.
        self._feed_next: feed.Coalescer | None = None
        self._workflow_of_task: dict[str, str] = {}
        self._metrics: WriterMetrics | None = None
        self._notifier = SystemdNotifier()

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
            self._notifier.stopping()
            self._drain_on_shutdown()
        finally:
            self.shutdown()
            restore()

    # -- the three phases ---------------------------------------------------------------------

    def initialize(self) -> bool:
        """Open and upgrade the file, take the lease, then bind. False if stopped while standing by."""
        if self._keystore is not None:
            self._keys = self._keystore.writer_pair()  # refused here, before the lease, if not safe
        prepare_database_file(self.db_path, adopt=self.adopt)
        directories = self._socket_directories() if self._listen_ipc else []
        if directories:
            self.endpoints = locations.endpoints_for(self.db_path, directories[0])
        try:
            self._conn = open_write_connection(self.db_path, self.synchronous)
            # The file SQLite just opened: from now on the path must keep leading to it. (A
            # rename between the open and this stat is caught by the check after the second open.)
            self._file_identity = locations.file_identity(self.db_path)
            # Another process may hold the write lock for long (upgrading a large file): wait
            # for it, as a standby waits for the lease, rather than fail with "database is locked".
            if not upgrade_when_free(
                self._conn, _now_us, standby=self.standby, should_stop=self._should_stop_standing_by
            ):
                return False
        except sqlite3.DatabaseError as exc:
            # SQLite's messages name no file ("attempt to write a readonly database").
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatabaseRefused(f"cannot open {self.db_path} for writing: {first_line}") from exc
        self._check_database_file()
        me = leases.current_process()
        # A TCP-only writer names its first listen address until it has bound the real port.
        lease_endpoint = self.endpoints.pull if self._listen_ipc else self._tcp_specs[0]
        self._lease = WriterLease(self._conn, me, lease_endpoint, self.db_path)
        self._lease.courtesy = self._courtesy
        self._lease.stand_aside = self._stand_aside
        self._lease.on_commit = self._publish_change
        if not self._lease.acquire(standby=self.standby, should_stop=self._should_stop_standing_by):
            return False
        # Checkpoints move to a thread of their own: inside a commit they stall it. SQLite's
        # own stays, rarely, to let the WAL start over (see writer/checkpointer.py).
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_RESTART_PAGES}")
        self._check_database_file()  # before the checkpointer opens the path (and creates a file there)
        self._checkpointer = Checkpointer(self.db_path, self.synchronous)
        self._check_database_file()  # the checkpointer opened the path again: the same file?
        # Only now, holding the lease, may we bind: a bind on an ipc path steals it.
        self._context = zmq.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._pull.setsockopt(zmq.MAXMSGSIZE, codec.MAX_MESSAGE_BYTES)
        self._pull.setsockopt(zmq.RCVHWM, RECEIVE_HIGH_WATER_MARK)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
        for directory in directories:
            self._listen(directory)
        if self._tcp_specs:
            self._listen_tcp()
        self._record_listeners()
        self._next_heartbeat = time.monotonic()
        self._next_file_check = self._next_socket_check = time.monotonic() + PATH_CHECK_INTERVAL_S
        self._next_sweep = time.monotonic()
        self._next_publish = time.monotonic()
        self._metrics = WriterMetrics(pid=me.pid, epoch=self._lease.epoch, started_us=_now_us())
        self._lease.on_transaction = self._metrics.record_transaction
        self._last_needed = time.monotonic()  # a standby's idle time counts from its takeover
        # Remote instances' silence counts from now: they need the time to find this writer.
        self._remote = RemoteInstances(self._remote.silence_s)
        # Prune jobs, in chunks between batches; an unfinished one in the file is taken up at once.
        self._prunes = PruneRunner(
            self._conn, self._lease.transaction, self._pull, self._stop, self._checkpointer.committed
        )
        self._ready.set()
        log.info(
            "writer pid %d serving %s on %s",
            me.pid,
            self.db_path,
            ", ".join(pull for pull, _pub in self._listening_pairs()),
        )
        self._notifier.ready(f"serving {self.db_path} as epoch {self._lease.epoch}")
        return True

    def loop_once(self) -> None:
        """Wait briefly for messages, commit them as one batch, then do what is due."""
        assert self._pull is not None
        now = time.monotonic()
        timeout_s = max(
            0.0,
            min(IDLE_POLL_S, self._next_heartbeat - now, self._next_sweep - now, self._next_file_check - now),
        )
        if self._pull.poll(int(timeout_s * 1000)):
            raws = self._receive_batch()
            if raws:
                self._last_needed = time.monotonic()
                self._commit(raws)
                self._stand_aside_after_overrun()
        now = time.monotonic()
        if now >= self._next_file_check:
            self._check_database_file()
        if now >= self._next_socket_check:
            self._check_sockets()
            self._next_socket_check = now + PATH_CHECK_INTERVAL_S
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
        if now >= self._next_sweep:
            self._sweep()
            self._next_sweep = now + liveness.SWEEP_INTERVAL_S
            self._exit_if_idle(now)
        if now >= self._next_publish:
            self._publish_metrics()
            self._next_publish = now + PUBLISH_INTERVAL_S
        self._prunes.run()
        self._stand_aside_after_overrun()
        self._notifier.watchdog()

    def shutdown(self) -> None:
        """Release the lease and close sockets and the connection (safe to call twice)."""
        if self._pull is not None:
            self._remove_socket_files_if_ours()
            self._pull.close(linger=0)
            self._pull = None
        if (
            self._lease is not None
            and self._lease.epoch
            and self._conn is not None
            and self._file_gone is None
        ):
            # (Not in a file the path no longer leads to: a standby there would take it over at
            # once, before it too sees the file gone. Once this process ends it is not held.)
            try:
                self._lease.release(_now_us())
            except sqlite3.Error as exc:
                log.error("could not release the lease: %s", exc)
            self._lease = None
        if self._pub is not None:
            self._pub.close(linger=PUB_LINGER_MS)
            self._pub = None
        if self._auth is not None:
            self._auth.stop()  # its sockets too must be closed before the context ends
            self._auth = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            if self._file_gone is not None:
                self._retire_companions()
            self._conn.close()
            self._conn = None

    # -- inside the loop ------------------------------------------------------------------------

    def _receive_batch(self) -> list[bytes]:
        assert self._pull is not None
        raws: list[bytes] = []
        size = 0
        waited = False
        max_bytes = COURTEOUS_BATCH_MAX_BYTES if self._courtesy.polite() else BATCH_MAX_BYTES
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
        message) as that dead letter.
        """
        assert self._conn is not None and self._lease is not None
        backoff_s = 0.05
        failures = 0
        own_failures = 0
        prepared: PreparedBatch | None = None
        while True:
            now_us = _now_us()
            try:
                if prepared is None and burial_reason is not None:
                    prepared = prepare_burial(
                        self._conn, raws[0], self._book, now_us=now_us, reason=burial_reason
                    )
                elif prepared is None:
                    # Outside the transaction: the write lock stays free meanwhile for others.
                    prepared = prepare_messages(self._conn, raws, self._book, now_us=now_us)
                    self._hear(prepared, now_us)
                started_ns = time.monotonic_ns()
                # Before BEGIN: describing the batch needs no lock.
                self._feed_next = describe_batch(prepared, self._workflow_of_task)
                with self._lease.transaction(now_us):
                    result = prepared.apply(
                        self._conn,
                        self._book,
                        dead_letters_kept=self.dead_letters_kept,
                        dead_letter_bytes_kept=self.dead_letter_bytes_kept,
                    )
                break
            except LeaseLostError:
                self._book.forget()
                raise
            except Exception as exc:
                self._feed_next = None  # not committed: it describes no later transaction
                environmental = isinstance(exc, sqlite3.Error) and is_environmental(exc)
                if not environmental:
                    own_failures += 1
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING and burial_reason is not None:
                        # Not even its dead letter commits: it stays with its client, which sends
                        # it again (and this writer tries again) after its resend timeout.
                        log.error("could not bury a message in the dead letters either: %s", exc)
                        return
                    if own_failures >= BATCH_ATTEMPTS_BEFORE_SPLITTING:
                        self._split_failing_batch(raws, exc)
                        return
                    if not isinstance(exc, sqlite3.Error):
                        log.exception("applying a batch of %d messages failed", len(raws))
                # Prepared again for the next attempt: the fault may be in preparing, and what
                # it applies is stamped with the time it commits, not of the first attempt.
                prepared = None
                failures += 1
                if self._metrics is not None:
                    self._metrics.count("commit_failures")
                if failures == 1:
                    log.error("commit of a batch of %d messages failed, will retry: %s", len(raws), exc)
                self._notifier.watchdog()  # alive and retrying: a restart would not help
                if self._stop.wait(backoff_s) and failures > 20:
                    log.error("giving up on a batch of %d messages at shutdown: %s", len(raws), exc)
                    return
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
        if failures:
            log.info("batch committed after %d failed attempts", failures)
        if time.monotonic() >= self._next_file_check:
            # Before telling clients it is committed: into the file their path leads to? (At
            # most once a second: a client confirms what a notice says against the file too.)
            self._check_database_file()
        self._book.commit(
            result.committed_seq,
            result.rejected_total,
            registered=result.registered,
            dead_letter_bytes=result.dead_letter_bytes,
        )
        assert prepared is not None
        self._remote.written(prepared.clock_skews)
        if self._checkpointer is not None:
            self._checkpointer.committed()
        if self._metrics is not None:
            self._metrics.record_batch(result, (time.monotonic_ns() - started_ns) // 1000)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S  # the fence renewed it
        self._publish(result)

    def _publish(self, result: BatchResult) -> None:
        assert self._pub is not None and self._conn is not None
        epoch = self.epoch
        for instance_id, seq in result.committed_seq.items():
            rejected = result.rejected_total[instance_id]
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, seq, rejected=rejected))
        for instance_id in result.gap_instances - result.committed_seq.keys():
            seq = self._book.last(self._conn, instance_id)
            rejected = self._book.rejected(self._conn, instance_id)
            self._send_notice(
                codec.encode_commit_notice(instance_id, epoch, seq, gap=True, rejected=rejected)
            )
        for instance_id in result.unknown_instances - result.committed_seq.keys():
            # The file has no row of it: register again. gap from 0 makes an older client
            # resend from seq 1, which registers it if that message (its hello) is still held.
            self._send_notice(codec.encode_commit_notice(instance_id, epoch, 0, gap=True, unknown=True))

    def _split_failing_batch(self, raws: list[bytes], exc: BaseException) -> None:
        """Commit a batch that keeps failing in halves; bury a single message that still fails."""
        attempts = BATCH_ATTEMPTS_BEFORE_SPLITTING
        reason = f"the writer failed {attempts} times applying it: {type(exc).__name__}: {exc}"
        if self._metrics is not None:
            self._metrics.count("batches_split" if len(raws) > 1 else "messages_buried")
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

    def _stand_aside_after_overrun(self) -> None:
        """Stand aside now if a transaction overran (the next transaction would do it anyway)."""
        assert self._lease is not None
        overrun = self._lease.overrun
        if overrun is not None:
            self._lease.overrun = None
            self._stand_aside(overrun)

    def _stand_aside(self, overrun: Overrun) -> None:
        """After a transaction that overran, let a writer that presumed this one dead take over.

        Commits nothing until this writer's heartbeat has looked stale to everyone for a
        while, then looks at the lease: another writer holds it now (a standby, or one a GUI
        spawned) -> LeaseLostError (exit 4); nobody took it -> carry on, as the writer it is.
        A slow disk with nobody standing by must not leave the database without a writer.
        """
        assert self._lease is not None
        if self._metrics is not None:
            self._metrics.count("overruns")
        until = self._lease.stand_aside_until(overrun)
        log.warning(
            "a transaction of this writer (epoch %d) lasted %.1f s, so others may presume it dead:"
            " it commits nothing for %.1f s, then carries on unless another writer took the lease",
            self.epoch,
            overrun.seconds,
            max(0.0, until - time.monotonic()),
        )
        while (left_s := until - time.monotonic()) > 0 and not self._stop.is_set():
            self._notifier.watchdog()  # alive, and waiting on purpose: a restart would not help
            self._stop.wait(min(left_s, IDLE_POLL_S))
        holder = self._lease.still_mine()
        if holder is not None:
            self._book.forget()
            raise LeaseLostError(
                f"lost the writer lease (epoch {self.epoch}) while standing aside after a"
                f" {overrun.seconds:.1f} s transaction: it is now held by pid {holder.pid}"
                f" on {holder.host}, epoch {holder.epoch}"
            )
        log.info(
            "no other writer took the lease while this one stood aside: carrying on as epoch %d", self.epoch
        )
        self._next_heartbeat = time.monotonic()  # show the watchers at once that it is alive

    def _publish_change(self, seq: int) -> None:
        """After the COMMIT numbered `seq`: its feed notice (what the writer said it would change)."""
        committed_at_us = _now_us()
        gathered, self._feed_next = self._feed_next, None
        if gathered is None:
            gathered = feed.Coalescer()
            gathered.overflow_unknown()
        assert self._lease is not None
        flags = feed.Flag.FOREIGN if self._courtesy.foreign else feed.Flag.NONE
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
            self._lease.heartbeat(_now_us())
        except sqlite3.Error as exc:
            self._feed_next = None
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
        if self._metrics is not None and result.heartbeats:
            self._metrics.count("instance_heartbeats", len(result.heartbeats))

    def _sweep(self) -> None:
        assert self._conn is not None and self._lease is not None
        try:
            dead = liveness.find_dead_instances(self._conn)
            silent = self._remote.find_silent(self._conn, leases.host_id(), time.monotonic())
            if dead or silent:
                now_us = _now_us()
                with self._lease.transaction(now_us):
                    for instance in dead + silent:
                        liveness.abandon(self._conn, instance, now_us)
                self._remote.declared_dead(instance.instance_id for instance in silent)
                if self._metrics is not None:
                    self._metrics.count("instances_abandoned", len(dead) + len(silent))
        except sqlite3.Error as exc:
            log.error("instance liveness sweep failed: %s", exc)
        try:
            deleted = self._instance_retention.run_if_due(self._lease.transaction, _now_us())
        except sqlite3.Error as exc:
            log.error("deleting instance rows past their retention failed: %s", exc)
            return
        if deleted:
            self._book.discard(deleted)
            self._remote.forget(deleted)
            if self._metrics is not None:
                self._metrics.count("instances_deleted", len(deleted))

    def _exit_if_idle(self, now: float) -> None:
        """Stop once nobody has needed this writer for exit_when_idle_s (if it was given)."""
        if self.exit_when_idle_s is None or self._stop.is_set():
            return
        if self._live_instances() != 0:
            self._last_needed = now
            return
        idle_s = now - self._last_needed
        if idle_s >= self.exit_when_idle_s:
            log.info(
                "no live instance and no message for %.1f s (exit when idle after %g s): stopping",
                idle_s,
                self.exit_when_idle_s,
            )
            self._stop.set()

    def _live_instances(self) -> int | None:
        """Instances registered live on this host, as the sweep just left them (None: unknown).

        The sweep that runs just before marks every one whose process is gone as dead, so
        the rows still 'live' are processes it found running: the pid check is the sweep's,
        not done twice. The WHERE clause is the sweep's (liveness.find_dead_instances): a row
        it cannot check (no pid yet, another host name without a boot id) keeps no writer
        alive. An instance of another host id counts while it is live: the sweep marks it
        dead once it falls silent (writer/remote.py).
        """
        assert self._conn is not None
        try:
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM instances WHERE ({liveness.CHECKABLE_LIVE_INSTANCES})"
                " OR (state = 'live' AND host_id IS NOT NULL AND host_id <> :host_id)",
                {"host": leases.host_name(), "host_id": leases.host_id()},
            ).fetchone()
        except sqlite3.Error as exc:
            log.error("could not count the live instances: %s", exc)
            return None  # unknown counts as needed: never leave because of a read error
        return int(row[0])

    def _publish_metrics(self) -> None:
        assert self._conn is not None and self._lease is not None and self._metrics is not None
        now_us = _now_us()
        self._metrics.totals["other_writer_commits_seen"] = self._courtesy.other_commits_seen
        try:
            self._feed_next = feed.Coalescer()  # counters are no record a watcher shows
            with self._lease.transaction(now_us):
                self._metrics.publish(self._conn, now_us)
            if self._checkpointer is not None:
                self._checkpointer.committed()  # the heartbeats and counters of an idle writer too
        except LeaseLostError:
            raise
        except sqlite3.Error as exc:
            self._feed_next = None
            log.error("could not publish the writer's counters: %s", exc)

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

    # -- the database file -------------------------------------------------------------------

    def _check_database_file(self) -> None:
        """Raise DatabaseFileGone unless the path still leads to the file this writer has open.

        rm of the file (or of its directory), mv, or another file put in its place: the writer
        would go on committing into a file no name reaches, and confirming it to clients. It
        stops instead, and says where the file went.
        """
        self._next_file_check = time.monotonic() + PATH_CHECK_INTERVAL_S
        if self._file_gone is not None:
            raise DatabaseFileGone(self._file_gone)
        try:
            info: os.stat_result | None = os.stat(self.db_path)
        except (FileNotFoundError, NotADirectoryError):
            info = None
        except OSError as exc:
            log.warning("cannot check that %s is still the file this writer has open: %s", self.db_path, exc)
            return  # cannot tell (a directory made unreadable): not a reason to stop
        opened = self._file_identity
        if info is not None and opened is not None and (info.st_dev, info.st_ino) == opened:
            if info.st_nlink > self._links_logged:
                log.warning(
                    "%s now has %d names (hard links): writers and clients refuse it under any of"
                    " them from now on; this writer goes on serving it under this one",
                    self.db_path,
                    info.st_nlink,
                )
            self._links_logged = info.st_nlink
            return
        went = _where_the_file_went(opened) if opened is not None else ""
        if info is None:
            what = f"the database file {self.db_path} is gone"
        else:
            what = f"{self.db_path} is now another file than the one this writer opened"
        if went:
            what += f" (the file this writer had open was {went})"
        self._file_gone = (
            f"{what}: this writer stops, committing and confirming nothing more; clients keep what"
            " they sent for a writer of the file now at that path"
        )
        log.error("%s", self._file_gone)
        raise DatabaseFileGone(self._file_gone)

    def _should_stop_standing_by(self) -> bool:
        """A standby's question while it waits: stopped? (Raises if its file is gone meanwhile.)"""
        self._check_database_file()  # each poll: a stat every 0.1 s, and a takeover never lags it
        return self._stop.is_set()

    def _retire_companions(self) -> None:
        """Once the path no longer leads to our file: fold its WAL into it, and free the old names.

        SQLite skips its checkpoint on close once it sees the file moved, so a moved file would
        lack what only its WAL holds; and the -wal and -shm at the old path are still this
        file's: a writer starting there would take them for its own (SQLite shares the -shm
        index between every process that opens the name). The names are removed only while
        they lead to the very files this process has open, and the -wal of a moved file only
        once everything in it is in the file.
        """
        assert self._conn is not None
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            log.error("could not checkpoint the WAL into the file that was at %s: %s", self.db_path, exc)
            busy = 1
        went = _where_the_file_went(self._file_identity) if self._file_identity is not None else ""
        companions = [Path(f"{self.db_path}{suffix}") for suffix in _COMPANION_SUFFIXES]
        for path, identity in _files_open_as(companions).items():
            if busy and went != "deleted" and path.name.endswith("-wal"):
                log.error(
                    "%s still holds commits of the file that was at %s (%s); it is left in place",
                    path,
                    self.db_path,
                    went or "moved",
                )
                continue
            if locations.file_identity(path) != identity:
                continue
            try:
                os.unlink(path)
            except OSError as exc:
                log.error(
                    "could not remove %s, which belongs to the file that was at %s: %s",
                    path,
                    self.db_path,
                    exc,
                )
                continue
            log.info("removed %s: it belongs to the file that was at %s", path, self.db_path)

    # -- the socket files and directories ------------------------------------------------------

    def _socket_directories(self) -> list[Path]:
        """The socket directories this writer can listen in, made owner-only; raises if none.

        One refused while another serves (someone squats /tmp/see-persistence-<uid>, but
        /run/user/<uid> is ours) is logged and tried again every second.
        """
        usable: list[Path] = []
        refused: list[tuple[Path, OSError]] = []
        for directory in locations.runtime_dirs():
            try:
                locations.ensure_private_directory(directory)
                locations.check_socket_files(locations.endpoints_for(self.db_path, directory))
            except OSError as exc:
                refused.append((directory, exc))
                continue
            usable.append(directory)
        if not usable:
            raise refused[0][1]
        for directory, error in refused:
            self._note_refusal(directory, str(error))
        return usable

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

    def _listening_pairs(self) -> list[tuple[str, str]]:
        """Every (pull, pub) endpoint pair bound now: the ipc ones, then the TCP ones."""
        ipc = [(bound.endpoints.pull, bound.endpoints.pub) for bound in self._listeners.values()]
        return ipc + self._tcp_pairs

    def _record_listeners(self) -> None:
        """Write the endpoints bound and the public key into the lease row, where clients look."""
        assert self._lease is not None
        pairs = self._listening_pairs()
        endpoint = pairs[0][0] if pairs else self._lease.endpoint
        public_key = self._keys.public if self._keys is not None and self._tcp_pairs else None
        self._feed_next = feed.Coalescer()  # no record a watcher shows
        self._lease.record_listeners(_now_us(), endpoint, pairs, public_key)

    def _listen(self, directory: Path) -> None:
        """Bind both sockets in `directory`, which the caller made sure is ours and owner-only."""
        assert self._pull is not None and self._pub is not None
        endpoints = locations.endpoints_for(self.db_path, directory)
        locations.check_socket_files(endpoints)
        if self._tcp_specs:
            for socket in (self._pull, self._pub):
                plain_server(socket)  # the ZAP handler must tell an ipc listener from a TCP one
        self._pull.bind(endpoints.pull)
        try:
            self._pub.bind(endpoints.pub)
        except zmq.ZMQError:
            _unbind(self._pull, endpoints.pull)
            raise
        pull_path, pub_path = endpoints.paths()
        self._listeners[directory] = _Listener(endpoints, _inode(pull_path), _inode(pub_path))

    def _unlisten(self, directory: Path) -> None:
        assert self._pull is not None and self._pub is not None
        listener = self._listeners.pop(directory)
        _unbind(self._pull, listener.endpoints.pull)
        _unbind(self._pub, listener.endpoints.pub)
        _remove_socket_files_if_ours(listener)

    def _note_refusal(self, directory: Path, reason: str) -> None:
        """Log why a socket directory is not listened in, once per reason."""
        if self._refusals.get(directory) != reason:
            self._refusals[directory] = reason
            log.warning("not listening in %s: %s", directory, reason)

    def _check_sockets(self) -> None:
        """Keep both sockets bound, as our own files, in every socket directory that is ours.

        Rebinds where a socket file vanished or was replaced (someone removed the path, a /tmp
        cleaner removed the directory), binds where /run/user/<uid> appeared after the start
        (the user logged in after a supervisor started this writer), unbinds where it went.
        """
        if not self._listen_ipc:
            return
        wanted = locations.runtime_dirs()
        for directory in [d for d in self._listeners if d not in wanted]:
            log.info(
                "%s is no longer a socket directory (the session ended?): not listening there", directory
            )
            self._unlisten(directory)
        for directory in wanted:
            listener = self._listeners.get(directory)
            problem = locations.private_directory_problem(directory)
            if listener is not None and problem is None and listener.intact():
                continue
            if listener is not None:
                log.warning(
                    "socket %s was removed or replaced%s; binding it again",
                    listener.endpoints.paths()[0],
                    f" ({problem})" if problem else "",
                )
                self._unlisten(directory)
            try:
                locations.ensure_private_directory(directory)
                self._listen(directory)
            except (OSError, zmq.ZMQError) as exc:
                self._note_refusal(directory, str(exc))
                continue
            if self._refusals.pop(directory, None) is not None or listener is None:
                log.info("listening in %s", directory)
        if not self._listeners and not self._unreachable_logged:
            log.error("no socket directory can be used: no client can reach this writer until one can")
        self._unreachable_logged = not self._listeners

    def _remove_socket_files_if_ours(self) -> None:
        for listener in self._listeners.values():
            _remove_socket_files_if_ours(listener)

    # -- signals -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Any:
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
