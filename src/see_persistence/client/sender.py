"""The Client's sending thread: moves the outbox to the socket, learns what is committed,
and resends what a dead writer lost.

It learns what is committed from the writer's commit notices (PUB/SUB: immediate, but a
notice can be missed, and is only the word of whoever holds the socket), and from the
instance row's last committed sequence number in the file at the database's path (always
right, but polled), which is what finally releases a message: a writer serving a file that
was deleted or replaced, or a stranger's socket, cannot make the client forget what the file
does not hold. The file also reveals a new lease epoch when the old writer's socket still
holds our connection (a stopped writer).

On another host than the writer's (leases.host_id differs from the one in the lease row, or
the row cannot be read), the instance proves it lives by sending something every
leases.INSTANCE_HEARTBEAT_INTERVAL_S: its messages, and while it has none, a heartbeat on the
same socket (codec.encode_instance_heartbeat), which nothing keeps or resends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import zmq

from .. import leases
from ..idgen import new_id
from ..leases import ProcessIdentity
from ..locations import Endpoints
from ..protocol import codec
from ..reader import Reader
from .outbox import MAX_OPERATIONS_PER_SEND, Outbox, OutgoingMessage
from .registration import hello_payload, new_secret
from .spawn import WriterSpawner
from .transport import TcpRoute, ZmqTransport

log = logging.getLogger("see_persistence.client")

IDLE_WAIT_S = 0.25
GATHER_S = 0.002  # after a send: look again this soon, unasked
RETRY_SEND_S = 0.005  # while ZeroMQ's own queue is full
FILE_CHECK_AFTER_S = 1.0  # no commit notice for this long while messages wait: read the file
STALL_RESEND_AFTER_S = 5.0  # a live writer committing none of ours for this long: resend
RESEND_MIN_INTERVAL_S = 0.5
SOCKET_CHECK_INTERVAL_S = 1.0  # how often the socket directory is checked again
VERIFY_INTERVAL_S = 0.25  # how often the file is read while noticed messages wait for it
# A commit is in the file before its notice is sent: a notice the file still does not bear
# out this long after is not to be believed (the file was deleted or replaced under the
# writer, or the socket is not our writer's). Those messages are sent again.
DISOWN_NOTICES_AFTER_S = 3.0
# Whether this instance shares the writer's host is read from the lease once per writer; when
# the lease cannot be read, again this often (it heartbeats meanwhile: that is always safe).
LOCALITY_RECHECK_S = 5.0


class Sender:
    """Runs in one thread; the only owner of the Client's sockets."""

    def __init__(
        self,
        outbox: Outbox,
        endpoints: Endpoints | TcpRoute,
        reader: Reader,
        *,
        spawner: WriterSpawner | None,
        identity: ProcessIdentity,
    ) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.reader = reader
        self.spawner = spawner
        self.identity = identity
        self.registrations = 0  # times this client became a new instance (see _register_again)
        self.sent_operations = 0
        self.resent_operations = 0
        self.messages_sent = 0
        self.reconnects = 0
        self.writer_epoch = 0
        self.heartbeats_sent = 0
        self._last_sent = time.monotonic()  # anything handed to the socket: a sign of life
        self._remote: bool | None = None  # on another host than the writer's? (None: not judged)
        self._remote_judged_epoch = 0
        self._remote_judged_at = 0.0
        self._queue: deque[OutgoingMessage] = deque()  # numbered, not yet handed to ZeroMQ
        self._last_taken_had_room = False
        self._resending: set[int] = set()
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._last_progress = time.monotonic()
        self._last_notice = time.monotonic()  # any notice of a writer (its heartbeats: ~2/s)
        self._last_resend = 0.0
        self._last_file_check = 0.0
        self._last_verify = 0.0
        self._last_socket_check = 0.0
        self.refusal: str | None = None  # why the socket directory was refused, while it is
        self.thread = threading.Thread(target=self._run, name="see-persistence-sender", daemon=True)

    # -- called from any thread ----------------------------------------------------------------

    def wake(self) -> None:
        """Tell the thread new operations wait (one byte, only when it may be asleep)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def stop(self, deadline: float) -> None:
        """Ask the thread to send what it can until `deadline` (monotonic), then end."""
        self._stop_deadline = deadline
        self._stop.set()
        self.wake()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        context: zmq.Context[Any] = zmq.Context()
        transport: ZmqTransport | None = None
        try:
            while transport is None:
                try:
                    transport = ZmqTransport(context, self.endpoints, self.outbox.instance_id)
                except PermissionError as exc:  # the socket directory is not ours (alone)
                    self._refused(exc)
                    if self._stop.wait(SOCKET_CHECK_INTERVAL_S):
                        return
            self.refusal = None
            self._loop(transport)
        except Exception:  # the thread must never die silently: callers would buffer forever
            log.exception("the see-persistence sender thread failed")
            raise
        finally:
            linger_ms = int(max(0.0, self._stop_deadline - time.monotonic()) * 1000)
            if transport is not None:
                transport.close(linger_ms=min(linger_ms, 1000))
            context.term()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.reader.close()

    def _loop(self, transport: ZmqTransport) -> None:
        poller = self._poller(transport)
        gathering = False  # just sent: more may follow soon, so look again unasked
        look_now = False
        sleep_s = GATHER_S
        while True:
            stopping = self._stop.is_set()
            if stopping and (time.monotonic() >= self._stop_deadline or self._all_confirmed()):
                return
            if gathering:
                # Callers do not wake this thread now (the flag tells them so): what they put
                # in the next moment goes out in one message, at the cost of one timer wakeup
                # instead of a pipe write, a wakeup and a message (and a notice) per operation.
                time.sleep(sleep_s)
                self._on_notices(transport)
            else:
                timeout_s = 0.0 if look_now else (0.05 if stopping else IDLE_WAIT_S)
                ready = dict(poller.poll(int(timeout_s * 1000)))
                if self._wake_r in ready:
                    self._drain_wake_pipe()
                if transport.sub in ready:
                    self._on_notices(transport)
            sent = self._send_all(transport)
            self._maintain(transport)
            if transport.sub not in dict(poller.sockets):  # replaced by a reconnect
                poller = self._poller(transport)
            # Gather while sending succeeds, and while ZeroMQ's queue is full (retry soon);
            # otherwise sleep until a caller writes to the pipe or a notice arrives.
            # (Unconnected, after a refused reconnect: nothing can go out, so do not spin.)
            gathering = (sent > 0 or bool(self._queue)) and transport.connected
            sleep_s = GATHER_S if sent else RETRY_SEND_S
            self._wake_pending = gathering
            # A caller that saw the flag still set did not wake us: look before sleeping.
            look_now = not gathering and transport.connected and self.outbox.has_pending()

    def _poller(self, transport: ZmqTransport) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(transport.sub, zmq.POLLIN)
        return poller

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _all_confirmed(self) -> bool:
        counts = self.outbox.counts()
        return counts.buffered == 0

    def _send_all(self, transport: ZmqTransport) -> int:
        """Hand what waits to ZeroMQ, until its queue is full or a message left not full.

        A message with room left means everything then waiting went out: what callers put
        meanwhile (while this thread let go of the GIL) waits for the next turn, to leave in
        one message rather than in a trickle of one-operation messages. Returns how many.
        """
        sent = 0
        while True:
            if not self._queue:
                if sent and self._last_taken_had_room:
                    return sent
                taken = self.outbox.take()
                if not taken:
                    return sent
                self._last_taken_had_room = taken[-1].operations < MAX_OPERATIONS_PER_SEND
                self._queue.extend(taken)
            if sent:
                # Between two messages, let a waiting caller have the GIL now rather than after
                # the 5 ms switch interval: this thread must never be why a call takes
                # milliseconds. (After the last one it soon sleeps, which lets go anyway.)
                time.sleep(0)
            message = self._queue[0]
            if not transport.send(message.raw):
                return sent
            self._queue.popleft()
            sent += 1
            self.messages_sent += 1
            self._last_sent = time.monotonic()
            if message.seq in self._resending:
                self._resending.discard(message.seq)
                self.resent_operations += message.caller_operations
            else:
                self.sent_operations += message.caller_operations

    def _on_notices(self, transport: ZmqTransport) -> None:
        for notice in transport.notices():
            self._last_notice = time.monotonic()
            if notice.instance_id is not None and notice.instance_id != self.outbox.instance_id:
                continue  # about the instance we were before registering again
            if notice.epoch != self.writer_epoch:
                self._on_new_writer(transport, notice.epoch, reconnect=False)
            if notice.committed_seq is None:
                continue
            if notice.unknown or (notice.gap and self._file_holds_less_than_confirmed(notice.committed_seq)):
                # The database does not know this instance, or holds less of it than it once
                # confirmed (an older file was restored in its place): our sequence cannot
                # continue there, so start over as a new instance with what it lacks.
                self._register_again(transport, "the database does not hold what it confirmed of us")
                return
            self._confirm(notice.committed_seq, notice.rejected)
            if notice.gap:
                self._resend("the writer saw a gap in our sequence")

    def _file_holds_less_than_confirmed(self, noticed_seq: int) -> bool:
        """Whether a gap notice saying `noticed_seq` shows the file lost what it confirmed of us.

        What is confirmed was read from the file, later than a notice waiting in our queue may
        have been sent: after a gap notice we resend, the writer commits, and the file can show
        that before we reach the next gap notice it had already sent. So a notice below what
        was confirmed is checked against the file again; only if the file too holds less (or
        cannot be read, as on another host) is it a loss.
        """
        confirmed_seq = self.outbox.counts().confirmed_seq
        if noticed_seq >= confirmed_seq:
            return False
        try:
            self.reader.recheck_file()
            progress = self.reader.instance_progress(self.outbox.instance_id)
        except self.reader.read_errors:
            return True
        if progress is None or progress[0] < confirmed_seq:
            return True
        log.debug(
            "a gap notice at seq %d is older than the file, which holds seq %d of us: not a loss",
            noticed_seq,
            progress[0],
        )
        return False

    def _register_again(self, transport: ZmqTransport, why: str) -> None:
        """Become a new instance that sends again everything the file does not hold."""
        old_id = self.outbox.instance_id
        token = new_secret()
        held = self.outbox.restart(new_id(), token, hello_payload(self.identity, token))
        self._queue.clear()
        self._resending.clear()
        self.registrations += 1
        transport.follow(self.outbox.instance_id)
        self._reconnect(transport)
        log.warning(
            "instance %s registers again as %s, with %d operations the database lacks: %s",
            old_id,
            self.outbox.instance_id,
            held,
            why,
        )

    def _confirm(self, committed_seq: int, rejected: int | None) -> None:
        now = time.monotonic()
        if self.outbox.confirm(committed_seq, rejected, now):
            self._last_progress = now

    def _verify(self, committed_seq: int, rejected: int | None) -> None:
        if self.outbox.verify(committed_seq, rejected):
            self._last_progress = time.monotonic()

    def _verify_noticed(self, transport: ZmqTransport, now: float) -> None:
        """Let the file confirm what notices said; take back what it never bears out."""
        oldest = self.outbox.oldest_unverified_since()
        if oldest is None or now - self._last_verify < VERIFY_INTERVAL_S:
            return
        self._last_verify = now
        try:
            self.reader.recheck_file()  # what releases messages must be the file at the path
            progress = self.reader.instance_progress(self.outbox.instance_id)
        except self.reader.read_errors:
            progress = None
        if progress is not None:
            self._verify(*progress)
        oldest = self.outbox.oldest_unverified_since()
        if oldest is not None and now - oldest >= DISOWN_NOTICES_AFTER_S:
            taken_back = self.outbox.disown_noticed()
            log.warning(
                "the file at %s does not hold %d messages the writer said it committed; sending them again",
                self.reader.database,
                taken_back,
            )
            self._reconnect(transport)
            self._resend("commit notices the file did not bear out", force=True)

    def _on_new_writer(self, transport: ZmqTransport, epoch: int, *, reconnect: bool) -> None:
        first = self.writer_epoch == 0
        self.writer_epoch = epoch
        self._last_sent = float("-inf")  # on another host: a heartbeat at once, for it to hear
        if first and not reconnect:
            return  # the first writer we hear of: nothing was sent to another one
        if reconnect:
            self._reconnect(transport)
        self._resend(f"a new writer holds the lease (epoch {epoch})", force=True)

    def _resend(self, why: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_resend < RESEND_MIN_INTERVAL_S:
            return
        unconfirmed = self.outbox.unconfirmed()
        if not unconfirmed:
            return
        self._last_resend = now
        self._last_progress = now
        already_queued = {m.seq for m in self._queue}
        self._resending = {m.seq for m in unconfirmed if m.seq not in already_queued}
        self._queue = deque(unconfirmed)
        log.info("resending %d unconfirmed messages: %s", len(unconfirmed), why)

    def _refused(self, exc: PermissionError) -> None:
        if str(exc) != self.refusal:
            log.error("not sending to the writer: %s", exc)
        self.refusal = str(exc)

    def _reconnect(self, transport: ZmqTransport) -> bool:
        """Connect anew (checking the socket directory first); False if it was refused."""
        self.reconnects += 1
        try:
            transport.reconnect()
        except PermissionError as exc:
            self._refused(exc)
            return False
        self.refusal = None
        return True

    def _check_socket_directory(self, transport: ZmqTransport, now: float) -> None:
        """Once a second: is the directory we connect through still ours, and the same one?"""
        if now - self._last_socket_check < SOCKET_CHECK_INTERVAL_S:
            return
        self._last_socket_check = now
        try:
            changed = transport.verify()
        except PermissionError as exc:
            self._refused(exc)
            return
        self.refusal = None
        if changed:
            self.reconnects += 1
            self._resend("connected anew: the socket directory changed", force=True)

    def _heartbeat_if_due(self, transport: ZmqTransport, now: float) -> None:
        """On another host than the writer's, and silent for a heartbeat interval: send one."""
        if self.writer_epoch == 0 or not transport.connected:
            return  # no writer known to hear it: ZeroMQ would only queue it
        if now - self._last_sent < leases.INSTANCE_HEARTBEAT_INTERVAL_S:
            return
        if not self._is_remote(now):
            return
        token = self.outbox.token
        if token is None:
            return
        raw = codec.encode_instance_heartbeat(self.outbox.instance_id, token, leases.wall_clock_us())
        if transport.send(raw):
            self._last_sent = now
            self.heartbeats_sent += 1

    def _is_remote(self, now: float) -> bool:
        """True unless the lease row says the writer is on this host (same leases.host_id).

        Judged once per writer (epoch): a writer that takes over may run elsewhere. Unknown
        (no lease readable, a writer older than host ids) counts as remote: a heartbeat too
        many costs a few bytes, one too few an instance marked dead.
        """
        judged = self._remote is not None and self._remote_judged_epoch == self.writer_epoch
        if judged or (now - self._remote_judged_at < LOCALITY_RECHECK_S and self._remote is not None):
            return bool(self._remote)
        self._remote_judged_at = now
        try:
            status = self.reader.writer_lease()
        except self.reader.read_errors:
            status = None
        if status is None or status.host_id is None:
            self._remote = True  # judged again after LOCALITY_RECHECK_S
            return True
        self._remote = status.host_id != leases.host_id()
        self._remote_judged_epoch = status.epoch
        return self._remote

    def _maintain(self, transport: ZmqTransport) -> None:
        """When notices stop while messages wait: read the file, and act on what it says."""
        now = time.monotonic()
        self._check_socket_directory(transport, now)
        self._heartbeat_if_due(transport, now)
        self._verify_noticed(transport, now)
        if now - self._last_file_check < FILE_CHECK_AFTER_S:
            return
        # An idle instance on another host must still find a writer that took over on other
        # ports, or its heartbeats go nowhere and the new writer finds it silent: once the
        # writer's own heartbeats stop reaching it, it reads the lease too.
        lost_writer = bool(self._remote) and now - self._last_notice >= FILE_CHECK_AFTER_S
        if self.outbox.counts().unconfirmed_messages == 0 and self.writer_epoch != 0 and not lost_writer:
            return
        if now - self._last_progress < FILE_CHECK_AFTER_S and self.writer_epoch != 0:
            return
        self._last_file_check = now
        try:
            status = self.reader.writer_lease()
            progress = self.reader.instance_progress(self.outbox.instance_id) if status else None
        except self.reader.read_errors:
            status, progress = None, None
        if progress is not None:
            self._verify(*progress)
        if status is None or not status.alive:
            if self.spawner is not None:
                self.spawner.maybe_spawn(now)
            return
        if self.spawner is not None:
            self.spawner.writer_serves()
        if self.writer_epoch == 0:
            self.writer_epoch = status.epoch  # first word of any writer: nothing to resend yet
        elif status.epoch != self.writer_epoch:
            self._on_new_writer(transport, status.epoch, reconnect=True)
            return
        if self.outbox.counts().unconfirmed_messages and now - self._last_progress >= STALL_RESEND_AFTER_S:
            # No commit of ours for long, under a live writer: our connection may lead to a
            # writer that is gone or frozen. A fresh connection and a resend cost little.
            self._reconnect(transport)
            self._resend("the writer has committed none of our messages for a while", force=True)
