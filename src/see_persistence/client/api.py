"""The fire-and-forget API that GUI code calls.

Every write call checks its arguments (a caller's mistake raises at once), stamps the
time, hands the operation to the bounded outbox and returns; a background thread does
the sending. Nothing here waits for the writer or the disk, except flush() and close().
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import backends, connection, leases, locations
from ..idgen import new_id
from ..keys import KeyStore
from ..protocol import durations
from ..protocol import operations as ops
from ..protocol.errors import CallerError, ClientClosed
from ..protocol.status import FINISHED_STATUSES, Status
from ..reader import Reader
from .outbox import Outbox
from .registration import hello_payload, new_secret
from .sender import Sender
from .spawn import WriterSpawner
from .transport import TcpRoute, tcp_endpoints_from_lease

if TYPE_CHECKING:
    from ..protocol.models import Rejection

log = logging.getLogger("see_persistence.client")

DEFAULT_BUFFER_LIMIT = 100_000
DEFAULT_CLOSE_TIMEOUT_S = 5.0
# At interpreter exit, every Client still open gets one bounded flush: this long for all of
# them together, not each.
EXIT_FLUSH_TIMEOUT_S = 2.0
# A flush that was told of the commit but does not find it in the file looks again this soon
# (meanwhile the sending thread may find the notices were not to be believed, and resend).
VERIFY_RETRY_S = 0.05


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ClientStats:
    """What a Client did so far (plain ints), counting the caller's operations only."""

    accepted: int  # operations taken into the outbox
    sent: int  # operations handed to the socket for the first time
    confirmed: int  # operations the writer committed: applied, or rejected (see `rejected`)
    rejected: int  # of those, operations the writer refused (dead letters; Client.rejections())
    dropped: int  # operations refused because the outbox was full
    resent: int  # operations sent again after a writer change or a gap
    buffered: int  # operations held against the bound (not yet committed, by the writer's word)
    messages: int  # messages handed to the socket, resends included
    reconnects: int  # times the sockets were opened anew for a new writer
    writer_epoch: int  # the lease epoch of the writer last heard from (0: none yet)
    spawns: int  # writers this client started (spawn_writer=True)
    spawn_failures: int  # of those, how many exited with an error (Client.spawn_error says why)
    registrations: int  # times it started over as a new instance (the database forgot the old one)
    heartbeats: int = 0  # heartbeats sent (only on another host than the writer's, while idle)


_NOTHING_YET = ClientStats(*(0,) * len(ClientStats.__dataclass_fields__))


class TaskRun:
    """A task inside `WorkflowRun.task()`: `id`, and `log()` to append a line."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def log(self, line: str) -> None:
        """Append one line to the task's logs."""
        self.client.append_task_log(self.id, line)


class WorkflowRun:
    """A workflow inside `Client.workflow()`: `id`, `task()` and `event()`."""

    def __init__(self, client: Client, workflow_id: str) -> None:
        self.client = client
        self.id = workflow_id
        self._next_order = 0

    @contextmanager
    def task(self, name: str, execution_order: int | None = None) -> Iterator[TaskRun]:
        """A task running inside the block: completed on exit, failed (with the error) on exception."""
        if execution_order is None:
            self._next_order += 1
            execution_order = self._next_order
        client = self.client
        task_id = client.create_task(self.id, name, execution_order=execution_order)
        client.update_task_status(task_id, Status.RUNNING)
        client.log_audit_event("task_started", f"task {name} started", workflow_id=self.id, task_id=task_id)
        try:
            yield TaskRun(client, task_id)
        except BaseException as exc:
            error = _describe(exc)
            client.update_task_status(task_id, Status.FAILED, error_message=error)
            client.log_audit_event(
                "task_failed",
                f"task {name} failed: {error}"[: ops.MAX_TEXT_CHARS],
                workflow_id=self.id,
                task_id=task_id,
            )
            raise
        client.update_task_status(task_id, Status.COMPLETED)
        client.log_audit_event(
            "task_completed", f"task {name} completed", workflow_id=self.id, task_id=task_id
        )

    def event(
        self,
        event_type: str,
        message: str,
        *,
        task_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> str:
        """Record an audit event about this workflow; returns its id."""
        return self.client.log_audit_event(
            event_type, message, workflow_id=self.id, task_id=task_id, data=data
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Client:
    """Records workflows, tasks and audit events without ever waiting for the writer.

    `Client(db_path)` registers this GUI instance; `spawn_writer=True` also starts a
    background writer when no live one holds the lease. The outbox holds `buffer_limit`
    unconfirmed operations; past that a call drops the operation and counts it in `stats`,
    or waits for room if `block_when_full`. Safe to use from several threads.

    Raises at once (no thread started) for a database file with more than one name
    (`locations.HardLinkedDatabase`) and for a socket directory that is not this user's
    alone (PermissionError saying why).

    Over TCP: `endpoint` is a connection string (`see-persistence keys show` prints it) or a
    bare `tcp://HOST:PORT` with the writer's public key as `server_key`. Without one, where
    libzmq has no ipc (or $SEE_PERSISTENCE_TRANSPORT=tcp), the client finds the writer's TCP
    endpoint and key in the lease row. Either way it is a CURVE client with this user's
    client key pair from `keys_dir` (keys.KeyStore: created on first use and allowed there),
    which the writer must have on its allow-list.

    On PostgreSQL (`db_path` a `postgresql://` URL, or $SEE_PERSISTENCE_DB one) it is always
    TCP: the client reads the writer's endpoints and key from the lease row through a read-only
    connection (a Reader of the URL), and while no writer has recorded any it keeps what it
    records in its outbox and looks again every second. It never starts a writer there:
    `spawn_writer=True` with a URL raises CallerError (a writer on PostgreSQL serves every
    workstation and is run by a supervisor, `see-persistence writer --db URL`). `database` is
    the URL (its str() hides the password); `db_path` exists for a file only.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        spawn_writer: bool = False,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        block_when_full: bool = False,
        endpoint: str | None = None,
        server_key: str | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        database = locations.resolve_database(db_path, backends.READER_AND_CLIENT_BACKENDS)
        self._keys_dir = Path(keys_dir).absolute() if keys_dir is not None else None
        self.database: Path | backends.DatabaseURL = database
        if isinstance(database, backends.DatabaseURL):
            if spawn_writer:
                raise CallerError(
                    f"spawn_writer=True starts a writer beside an SQLite file; {database} is a"
                    " PostgreSQL server, whose writer a supervisor runs (see-persistence writer --db URL)"
                )
            self._reader = Reader(database.url)
            self._endpoints = self._route(endpoint, server_key, keys_dir, tcp_only=True)
        else:
            self.db_path: Path = database
            # Refused at once, in the caller: a file with two names (two WALs for one database),
            # and a socket directory that is not this user's alone (anyone there could read what
            # we send and answer with commit notices).
            locations.check_single_name(self.db_path)
            self._reader = Reader(self.db_path)  # fork-safe: a child opens its own connection
            self._endpoints = self._route(endpoint, server_key, keys_dir)
        self._buffer_limit = buffer_limit
        self._block_when_full = block_when_full
        self._spawn_wanted = spawn_writer
        self._start()
        _live_clients.add(self)

    def _route(
        self,
        endpoint: str | None,
        server_key: str | None,
        keys_dir: str | os.PathLike[str] | None,
        *,
        tcp_only: bool = False,
    ) -> locations.Endpoints | TcpRoute:
        """The ipc endpoints (checked), or how to reach the writer over TCP; raises saying why not."""
        if endpoint is None and server_key is not None:
            raise CallerError("server_key is the key of a TCP endpoint: give endpoint='tcp://HOST:PORT' too")
        if endpoint is not None:
            try:
                fixed = connection.parse_connection(endpoint, server_key)
            except ValueError as exc:
                raise CallerError(str(exc)) from None
            return TcpRoute(keys=KeyStore(keys_dir).client_pair(), fixed=fixed)
        if tcp_only or connection.default_transport() == connection.TCP:
            reader = self._reader
            return TcpRoute(
                keys=KeyStore(keys_dir).client_pair(), resolve=lambda: tcp_endpoints_from_lease(reader)
            )
        return locations.checked_endpoints(self.db_path)

    def _start(self) -> None:
        """Register a new instance of this process: outbox, sending thread, hello."""
        self._identity = leases.current_process()
        token = new_secret()
        self._outbox = Outbox(
            new_id(), self._buffer_limit, block_when_full=self._block_when_full, token=token
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._rejected_reported = 0  # the rejected count the last flush() answered for
        self._spawner = WriterSpawner(self.db_path, self._keys_dir) if self._spawn_wanted else None
        self._sender = Sender(
            self._outbox,
            self._endpoints,
            self._reader,
            spawner=self._spawner,
            identity=self._identity,
        )
        self._outbox.put_internal(ops.HELLO, hello_payload(self._identity, token))
        if self._spawner is not None and not self._writer_alive():
            self._spawner.maybe_spawn(time.monotonic())
        self._sender.thread.start()
        self._sender.wake()
        self._fork_generation = _forks

    def _start_in_forked_child(self) -> None:
        """In a child forked from the process that made this Client: become its own instance.

        The copy the child inherited has no sending thread, and its outbox's lock may have
        been held by a thread of the parent at the fork; the parent still sends what that
        outbox holds. So the child starts afresh: a new instance, outbox and thread.
        """
        with _fork_lock:
            if self._fork_generation == _forks:
                return  # another thread of this child got here first
            was_closed = self._closed
            self._start()
            if was_closed:
                self._closed = True  # closed in the parent: closed here too, nothing to send
            _finalize_in_multiprocessing_child()
        log.info("a forked child (pid %d) records as instance %s", os.getpid(), self.instance_id)

    # -- records ---------------------------------------------------------------------------------

    def create_workflow(self, name: str, metadata: Mapping[str, Any] | None = None) -> str:
        """Record a new pending workflow run; returns its id at once."""
        record_id = new_id()
        payload = {
            "id": record_id,
            "workflow_name": ops.check_name("name", name),
            "metadata": ops.encode_json_object("metadata", metadata),
            "at_us": _now_us(),
        }
        self._put(ops.CREATE_WORKFLOW, payload)
        return record_id

    def update_workflow_status(
        self, workflow_id: str, status: Status | str, *, error_message: str | None = None
    ) -> None:
        """Set a workflow's status: running sets started_at; completed/failed set completed_at, success."""
        self._put(
            ops.UPDATE_WORKFLOW_STATUS,
            {
                "id": ops.check_id("workflow_id", workflow_id),
                "status": ops.check_status("status", status),
                "error_message": ops.check_optional_text("error_message", error_message),
                "at_us": _now_us(),
            },
        )

    def create_task(self, workflow_id: str, name: str, execution_order: int = 0) -> str:
        """Record a new pending task of a workflow; returns its id at once."""
        record_id = new_id()
        payload = {
            "id": record_id,
            "workflow_id": ops.check_id("workflow_id", workflow_id),
            "task_name": ops.check_name("name", name),
            "execution_order": ops.check_int32("execution_order", execution_order),
            "at_us": _now_us(),
        }
        self._put(ops.CREATE_TASK, payload)
        return record_id

    def update_task_status(
        self,
        task_id: str,
        status: Status | str,
        *,
        output: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Set a task's status, and optionally its output or error message."""
        self._put(
            ops.UPDATE_TASK_STATUS,
            {
                "id": ops.check_id("task_id", task_id),
                "status": ops.check_status("status", status),
                "output": ops.check_optional_text("output", output),
                "error_message": ops.check_optional_text("error_message", error_message),
                "at_us": _now_us(),
            },
        )

    def append_task_log(self, task_id: str, line: str) -> None:
        """Append one line to a task's logs."""
        self._put(
            ops.APPEND_TASK_LOG,
            {
                "id": ops.check_id("task_id", task_id),
                "line": ops.check_text("line", line),
                "at_us": _now_us(),
            },
        )

    def log_audit_event(
        self,
        event_type: str,
        message: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> str:
        """Record an audit event; returns its id at once."""
        record_id = new_id()
        payload = {
            "id": record_id,
            "event_type": ops.check_name("event_type", event_type),
            "message": ops.check_text("message", message),
            "workflow_id": ops.check_optional_id("workflow_id", workflow_id),
            "task_id": ops.check_optional_id("task_id", task_id),
            "data": ops.encode_json_object("data", data),
            "at_us": _now_us(),
        }
        self._put(ops.AUDIT_EVENT, payload)
        return record_id

    def prune(
        self,
        older_than: timedelta | float | str,
        statuses: Iterable[Status | str] = FINISHED_STATUSES,
    ) -> str:
        """Ask the writer to delete finished workflows created more than `older_than` ago.

        `older_than` is a timedelta, seconds, or an age as the command line takes it ("30d",
        "12h", "90m", "3600s", "2w"). Tasks and audit events go with their workflow; a
        pending or running workflow is never deleted. The writer records the prune as a job in
        order with everything this client sent before (that is what a flush confirms), then
        deletes in short chunks between other clients' batches, going on after a restart or a
        takeover. When it is done it records what it deleted in an audit event whose id this
        returns: `Reader.get_audit_event(id)` is None until then, and its `data` has the counts.
        """
        seconds = durations.check_age("older_than", older_than)
        report_id = new_id()
        now_us = _now_us()
        self._put(
            ops.PRUNE,
            {
                "id": report_id,
                "older_than_us": durations.cutoff_us(now_us, seconds),
                "statuses": ops.check_prunable_statuses("statuses", list(statuses)),
                "at_us": now_us,
            },
        )
        return report_id

    @contextmanager
    def workflow(self, name: str, metadata: Mapping[str, Any] | None = None) -> Iterator[WorkflowRun]:
        """A workflow running inside the block: completed on exit, failed (with the error) on exception.

        Each step is recorded in the audit trail too: workflow_started, then
        workflow_completed or workflow_failed (and task_started, task_completed, task_failed
        for the tasks of `WorkflowRun.task()`).
        """
        workflow_id = self.create_workflow(name, metadata)
        self.update_workflow_status(workflow_id, Status.RUNNING)
        self.log_audit_event("workflow_started", f"workflow {name} started", workflow_id=workflow_id)
        try:
            yield WorkflowRun(self, workflow_id)
        except BaseException as exc:
            error = _describe(exc)
            self.update_workflow_status(workflow_id, Status.FAILED, error_message=error)
            self.log_audit_event(
                "workflow_failed",
                f"workflow {name} failed: {error}"[: ops.MAX_TEXT_CHARS],
                workflow_id=workflow_id,
            )
            raise
        self.update_workflow_status(workflow_id, Status.COMPLETED)
        self.log_audit_event("workflow_completed", f"workflow {name} completed", workflow_id=workflow_id)

    # -- delivery ----------------------------------------------------------------------------------

    async def aflush(self, timeout: float = 5.0) -> bool:
        """flush() awaited from asyncio: it waits on a worker thread, so the loop runs meanwhile."""
        import asyncio  # here: a GUI that never awaits does not pay for importing it

        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything sent so far is applied; True once every Reader can see it all.

        False if `timeout` passed first, or if the writer rejected operations of this client
        since the previous flush (they are dead letters: `stats.rejected` counts them and
        `rejections()` says why). Blocks the calling thread for at most `timeout` seconds.
        """
        if self._fork_generation != _forks:
            return True  # a child that never recorded through this Client has sent nothing
        settled = self._settle(timeout)
        rejected = self._outbox.rejected()
        newly_rejected = rejected - self._rejected_reported
        self._rejected_reported = rejected
        if newly_rejected > 0:
            log.warning(
                "the writer rejected %d operation(s) of this client; Client.rejections() says why",
                newly_rejected,
            )
        return settled and newly_rejected <= 0

    def rejections(self, limit: int = 100) -> list[Rejection]:
        """The operations of this client the writer refused, newest first, with the reason.

        Reads the database (a Reader query); the dead-letter table keeps the newest rows
        only, so `stats.rejected` may count more than this can still show.
        """
        if self._fork_generation != _forks:
            return []  # a child that never recorded through this Client: no instance of its own yet
        return self._reader.get_rejections(self.instance_id, limit=limit)

    @property
    def instance_id(self) -> str:
        """This GUI instance's id (a new one after the database forgot the old: see README)."""
        return self._outbox.instance_id

    @property
    def connection_error(self) -> str | None:
        """Why this client cannot reach the writer's socket now (a socket directory that is not
        this user's alone), or None; what it records waits in its outbox meanwhile."""
        return self._sender.refusal

    @property
    def spawn_error(self) -> str | None:
        """Why the last writer this client spawned could not start, or None."""
        return self._spawner.last_error if self._spawner is not None else None

    @property
    def stats(self) -> ClientStats:
        """A snapshot of this client's counters (the caller's operations, not the instance's own)."""
        if self._fork_generation != _forks:
            return _NOTHING_YET  # a forked child's copy, not used yet: the parent's counts are not its own
        counts = self._outbox.counts()
        sender = self._sender
        spawner = self._spawner
        return ClientStats(
            accepted=counts.accepted - counts.internal,
            sent=sender.sent_operations,
            confirmed=counts.caller_confirmed,
            rejected=counts.rejected,
            dropped=counts.dropped,
            resent=sender.resent_operations,
            buffered=counts.buffered - counts.internal_held,
            messages=sender.messages_sent,
            reconnects=sender.reconnects,
            writer_epoch=sender.writer_epoch,
            spawns=spawner.spawns if spawner is not None else 0,
            spawn_failures=spawner.failures if spawner is not None else 0,
            registrations=sender.registrations,
            heartbeats=sender.heartbeats_sent,
        )

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
        """Flush, say goodbye, stop sending, all within `timeout` s. True if nothing was left behind.

        Operations the writer rejected are not left behind: they are dead letters (see
        `rejections()`), and close() does not count them against its answer.
        """
        if self._fork_generation != _forks:
            # Inherited from a parent and never used here: nothing of this process to end.
            self._closed = True
            _live_clients.discard(self)
            return True
        with self._close_lock:
            if self._closed:
                return True
            self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        settled = self._settle(timeout)
        self._outbox.put_internal(ops.GOODBYE, {"at_us": _now_us()})
        if settled:  # the goodbye only once the rest is in: it ends the instance
            settled = self._settle(max(0.0, deadline - time.monotonic()))
        self._outbox.close()
        self._sender.stop(deadline)
        self._sender.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._spawner is not None:
            self._spawner.poll(time.monotonic())  # reap a spawned writer that exited; it lives on otherwise
        # The connection flush() read the file through in this thread: an open connection
        # keeps the writer's last close from checkpointing and removing the WAL.
        self._reader.close()
        _live_clients.discard(self)
        if not settled:
            log.warning("closed with %d operations not confirmed by a writer", self._outbox.counts().buffered)
        return settled

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside --------------------------------------------------------------------------------------

    def _put(self, name: str, payload: dict[str, Any]) -> None:
        if self._fork_generation != _forks:
            self._start_in_forked_child()
        if self._closed:
            raise ClientClosed("this Client is closed")
        if self._outbox.put(name, payload):
            self._sender.wake()

    def _settle(self, timeout: float) -> bool:
        """Wait until the file holds everything accepted so far (applied or rejected).

        The writer's notices say when to look; the file at the database's path decides.
        """
        if self._fork_generation != _forks:
            return True  # a child that never recorded through this Client has nothing to wait for
        outbox = self._outbox
        target = outbox.accepted()
        self._sender.wake()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if outbox.wait_confirmed(target, 0.0):
                return True
            if not outbox.wait_noticed(target, deadline - time.monotonic()):
                return False
            self._verify_with_file()
            if outbox.wait_confirmed(target, min(VERIFY_RETRY_S, deadline - time.monotonic())):
                return True
            if time.monotonic() >= deadline:
                return False

    def _verify_with_file(self) -> None:
        try:
            self._reader.recheck_file()  # what releases messages must be the file at the path
            progress = self._reader.instance_progress(self.instance_id)
        except self._reader.read_errors:
            return
        if progress is not None:
            self._outbox.verify(*progress)

    def _writer_alive(self) -> bool:
        try:
            with Reader(self.db_path) as reader:
                status = reader.writer_lease()
        except Exception:  # no file yet, or one no writer has set up: no live writer
            return False
        return status is not None and status.alive


_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()

# Forks seen by this process: a Client made before the last one belongs to the parent.
# Counting in the child is cheaper than asking for the pid on every call.
_forks = 0
_fork_lock = threading.Lock()
_finalizer_registered_at = -1


def _after_fork_in_child() -> None:
    global _forks, _fork_lock
    _forks += 1
    _fork_lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _finalize_in_multiprocessing_child() -> None:
    """In a multiprocessing child, flush before it ends: it leaves by os._exit, skipping atexit."""
    global _finalizer_registered_at
    util = sys.modules.get("multiprocessing.util")
    if util is None or _finalizer_registered_at == _forks:
        return
    _finalizer_registered_at = _forks
    util.Finalize(None, _close_live_clients, exitpriority=10)


@atexit.register
def _close_live_clients() -> None:
    # A GUI that forgot close() still gets a bounded flush before the interpreter ends:
    # EXIT_FLUSH_TIMEOUT_S for all of them together, so that exit is never held up longer.
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT_S
    for client in list(_live_clients):
        client.close(timeout=max(0.0, deadline - time.monotonic()))
