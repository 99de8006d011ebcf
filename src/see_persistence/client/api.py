"""The fire-and-forget API that GUI code calls.

Every write call checks its arguments (a caller's mistake raises at once), stamps the
time, hands the operation to the bounded outbox and returns; a background thread does
the sending. Nothing here waits for the writer or the disk, except flush() and close().
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import leases, locations
from ..idgen import new_id
from ..protocol import operations as ops
from ..protocol.errors import CallerError, ClientClosed
from ..protocol.status import FINISHED_STATUSES, Status
from ..reader import Reader
from .outbox import Outbox
from .sender import Sender
from .spawn import spawn_writer

log = logging.getLogger("see_persistence.client")

DEFAULT_BUFFER_LIMIT = 100_000
DEFAULT_CLOSE_TIMEOUT_S = 5.0
GOODBYE_TIMEOUT_S = 1.0


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ClientStats:
    """What a Client did so far (plain ints)."""

    accepted: int  # operations taken into the outbox
    sent: int  # operations handed to the socket for the first time
    confirmed: int  # operations the writer committed
    dropped: int  # operations refused because the outbox was full
    resent: int  # operations sent again after a writer change or a gap
    buffered: int  # operations held now (not yet confirmed)
    messages: int  # messages handed to the socket, resends included
    reconnects: int  # times the sockets were opened anew for a new writer
    writer_epoch: int  # the lease epoch of the writer last heard from (0: none yet)


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
        task_id = self.client.create_task(self.id, name, execution_order=execution_order)
        self.client.update_task_status(task_id, Status.RUNNING)
        try:
            yield TaskRun(self.client, task_id)
        except BaseException as exc:
            self.client.update_task_status(task_id, Status.FAILED, error_message=_describe(exc))
            raise
        self.client.update_task_status(task_id, Status.COMPLETED)

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
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        spawn_writer: bool = False,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        block_when_full: bool = False,
    ) -> None:
        self.db_path: Path = locations.resolve_db_path(db_path)
        self.instance_id: str = new_id()
        self._identity = leases.current_process()
        self._outbox = Outbox(self.instance_id, buffer_limit, block_when_full=block_when_full)
        self._closed = False
        self._close_lock = threading.Lock()
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._sender = Sender(
            self._outbox,
            locations.endpoints_for(self.db_path),
            Reader(self.db_path),
            spawn=self._spawn_writer if spawn_writer else None,
        )
        self._outbox.put(
            ops.HELLO,
            {
                "pid": self._identity.pid,
                "process_create_time": self._identity.create_time,
                "host": self._identity.host,
                "at_us": _now_us(),
            },
        )
        if spawn_writer and not self._writer_alive():
            self._spawn_writer()
        self._sender.thread.start()
        self._sender.wake()
        _live_clients.add(self)

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
        older_than: timedelta | float,
        statuses: Iterable[Status | str] = FINISHED_STATUSES,
    ) -> str:
        """Ask the writer to delete finished workflows created more than `older_than` ago.

        `older_than` is a timedelta or seconds. Tasks and audit events go with their
        workflow; a pending or running workflow is never deleted. The writer applies it in
        order with everything this client sent before, and records what it deleted in an
        audit event whose id this returns (`Reader.get_audit_event(id).data` after a flush).
        """
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        if not seconds >= 0:
            raise CallerError(f"older_than must be a non-negative age, got {older_than!r}")
        report_id = new_id()
        now_us = _now_us()
        self._put(
            ops.PRUNE,
            {
                "id": report_id,
                "older_than_us": max(0, now_us - int(seconds * 1_000_000)),
                "statuses": ops.check_prunable_statuses("statuses", list(statuses)),
                "at_us": now_us,
            },
        )
        return report_id

    @contextmanager
    def workflow(self, name: str, metadata: Mapping[str, Any] | None = None) -> Iterator[WorkflowRun]:
        """A workflow running inside the block: completed on exit, failed (with the error) on exception."""
        workflow_id = self.create_workflow(name, metadata)
        self.update_workflow_status(workflow_id, Status.RUNNING)
        try:
            yield WorkflowRun(self, workflow_id)
        except BaseException as exc:
            self.update_workflow_status(workflow_id, Status.FAILED, error_message=_describe(exc))
            raise
        self.update_workflow_status(workflow_id, Status.COMPLETED)

    # -- delivery ----------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything sent so far is committed; True once every Reader can see it."""
        target = self._outbox.accepted()
        self._sender.wake()
        return self._outbox.wait_confirmed(target, timeout)

    @property
    def stats(self) -> ClientStats:
        """A snapshot of this client's counters."""
        counts = self._outbox.counts()
        sender = self._sender
        return ClientStats(
            accepted=counts.accepted,
            sent=sender.sent_operations,
            confirmed=counts.confirmed,
            dropped=counts.dropped,
            resent=sender.resent_operations,
            buffered=counts.buffered,
            messages=sender.messages_sent,
            reconnects=sender.reconnects,
            writer_epoch=sender.writer_epoch,
        )

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
        """Flush (at most `timeout` s), say goodbye, stop sending. True if nothing was left behind."""
        with self._close_lock:
            if self._closed:
                return True
            self._closed = True
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        self._outbox.put(ops.GOODBYE, {"at_us": _now_us()})
        remaining = max(0.0, deadline - time.monotonic())
        flushed = self.flush(max(remaining, min(GOODBYE_TIMEOUT_S, timeout))) and flushed
        self._outbox.close()
        self._sender.stop(time.monotonic())
        self._sender.thread.join(timeout=2.0)
        for process in self._spawned:
            process.poll()  # reap a spawned writer that already exited (it lives on otherwise)
        _live_clients.discard(self)
        if not flushed:
            log.warning("closed with %d operations not confirmed by a writer", self._outbox.counts().buffered)
        return flushed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside --------------------------------------------------------------------------------------

    def _put(self, name: str, payload: dict[str, Any]) -> None:
        if self._closed:
            raise ClientClosed("this Client is closed")
        if self._outbox.put(name, payload):
            self._sender.wake()

    def _writer_alive(self) -> bool:
        try:
            status = Reader(self.db_path).get_writer_status()
        except Exception:  # no file yet, or one no writer has set up: no live writer
            return False
        return status is not None and status.alive

    def _spawn_writer(self) -> None:
        self._spawned = [p for p in self._spawned if p.poll() is None]
        self._spawned.append(spawn_writer(self.db_path))


_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_live_clients() -> None:
    # A GUI that forgot close() still gets a bounded flush before the interpreter ends.
    for client in list(_live_clients):
        client.close(timeout=2.0)
