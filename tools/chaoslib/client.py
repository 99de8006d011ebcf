"""The client role: one GUI-like process that records as fast as it can and remembers what it asked.

Started by the supervisor as `tools/chaos.py --client-role`. It creates its Client, says it is
ready, waits for the go, records workflows, tasks, log lines and audit events (contents derived
from its label and counters) until its deadline, flushes, closes, and writes its manifest: every
record with the last status, output and error it asked for, for the verification to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import time
import traceback
from pathlib import Path
from typing import Any

from see_persistence import Client, Status

from .observe import wait_until
from .rundir import (
    EVENT_FIELDS,
    TASK_FIELDS,
    WORKFLOW_FIELDS,
    manifest_path,
    read_go,
    ready_path,
    recorded_path,
    write_json_atomically,
)

log = logging.getLogger("see_persistence.chaos")

GO_TIMEOUT_S = 120.0  # a client waits this long for the supervisor's go
DEFAULT_MAX_BUFFERED = 20_000  # a client waits while it holds this many unconfirmed operations


class Recorder:
    """Records workflows, tasks, log lines and audit events through one Client, and remembers them."""

    def __init__(self, client: Client, label: str, rng: random.Random) -> None:
        """Record through `client`; contents are derived from `label` and counters."""
        self.client = client
        self.label = label
        self.rng = rng
        self.workflows: list[list[Any]] = []
        self.tasks: list[list[Any]] = []
        self.events: list[list[Any]] = []
        self.operations = 0
        self.status_updates = 0
        self._next_event = 0

    def _final_status(self) -> Status:
        """A finishing status: mostly completed, sometimes failed or cancelled."""
        return self.rng.choices((Status.COMPLETED, Status.FAILED, Status.CANCELLED), weights=(80, 15, 5))[0]

    def _set_workflow_status(self, row: list[Any], status: Status, error: str | None = None) -> None:
        """Ask for a workflow status and remember it (the writer keeps the last error given)."""
        self.client.update_workflow_status(row[0], status, error_message=error)
        row[2] = status.value
        if error is not None:
            row[3] = error
        self.operations += 1
        self.status_updates += 1

    def _set_task_status(
        self, row: list[Any], status: Status, *, output: str | None = None, error: str | None = None
    ) -> None:
        """Ask for a task status and remember it (the writer keeps the last output and error given)."""
        self.client.update_task_status(row[0], status, output=output, error_message=error)
        row[4] = status.value
        if output is not None:
            row[5] = output
        if error is not None:
            row[6] = error
        self.operations += 1
        self.status_updates += 1

    def _event(self, workflow_id: str | None, task_id: str | None) -> None:
        """Ask for one audit event with a unique message."""
        message = f"{self.label}-ev-{self._next_event}"
        self._next_event += 1
        event_type = "chaos_task_step" if task_id else "chaos_step"
        data = {"client": self.label, "n": self._next_event - 1}
        event_id = self.client.log_audit_event(
            event_type, message, workflow_id=workflow_id, task_id=task_id, data=data
        )
        self.events.append([event_id, event_type, message, workflow_id, task_id])
        self.operations += 1

    def one_workflow(self, n: int) -> None:
        """Record workflow number `n`: its tasks, their log lines, audit events, and statuses."""
        c, rng = self.client, self.rng
        name = f"{self.label}-wf-{n}"
        workflow_id = c.create_workflow(name, metadata={"client": self.label, "n": n})
        workflow = [workflow_id, name, Status.PENDING.value, None]
        self.workflows.append(workflow)
        self.operations += 1
        self._set_workflow_status(workflow, Status.RUNNING)
        for order in range(1, rng.randint(1, 3) + 1):
            task_name = f"{name}-t{order}"
            task_id = c.create_task(workflow_id, task_name, execution_order=order)
            task: list[Any] = [task_id, workflow_id, task_name, order, Status.PENDING.value, None, None, []]
            self.tasks.append(task)
            self.operations += 1
            self._set_task_status(task, Status.RUNNING)
            for i in range(rng.randint(0, 4)):
                line = f"{task_name}-L{i}"
                c.append_task_log(task_id, line)
                task[7].append(line)
                self.operations += 1
            if rng.random() < 0.3:
                self._event(workflow_id, task_id)
            final = self._final_status()
            if final is Status.COMPLETED:
                self._set_task_status(task, final, output=f"{task_name}-out")
            elif final is Status.FAILED:
                self._set_task_status(task, final, error=f"{task_name}-err")
            else:
                self._set_task_status(task, final)
        self._event(workflow_id, None)
        final = self._final_status()
        self._set_workflow_status(workflow, final, f"{name}-err" if final is Status.FAILED else None)
        if rng.random() < 0.1:
            self._event(None, None)  # an event about no workflow at all

    def manifest(self) -> dict[str, Any]:
        """What this client asked for, as the manifest's record lists."""
        return {
            "workflow_fields": WORKFLOW_FIELDS,
            "workflows": self.workflows,
            "task_fields": TASK_FIELDS,
            "tasks": self.tasks,
            "event_fields": EVENT_FIELDS,
            "events": self.events,
            "operations": self.operations,
            "status_updates": self.status_updates,
        }


def run_client(args: argparse.Namespace) -> int:
    """The client role: record until the deadline, flush, close, write the manifest."""
    run_dir = Path(args.run_dir)
    label = args.label
    client = Client(args.db)
    recorder = Recorder(client, label, random.Random(f"{args.seed}-{label}"))
    result: dict[str, Any] = {"label": label, "pid": os.getpid(), "instance_id": client.instance_id}
    # A client registers again as a new instance when the file lacks what it confirmed of it (or
    # a writer killed before committing its hello answers "unknown"): what it resends then
    # carries the new id. Every id it had is where its records may be.
    instance_ids = [client.instance_id]
    ready_path(run_dir, label).write_text(client.instance_id, encoding="utf-8")
    code = 0
    throttled_s = 0.0
    started = time.monotonic()
    try:
        go = wait_until(lambda: read_go(run_dir), GO_TIMEOUT_S)
        if go is None:
            raise RuntimeError("the supervisor never said go")
        started = time.monotonic()
        deadline = started + float(go["seconds"])
        if args.lifetime:  # a soak's client: its own span, within the run's
            deadline = min(started + args.lifetime, float(go["end_mono"]))
        n = 0
        while time.monotonic() < deadline:
            recorder.one_workflow(n)
            n += 1
            if client.instance_id != instance_ids[-1]:
                instance_ids.append(client.instance_id)
            if client.stats.buffered > args.max_buffered:  # hold back rather than fill the outbox
                waited = time.monotonic()
                while client.stats.buffered > args.max_buffered // 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                throttled_s += time.monotonic() - waited
    except Exception:
        log.exception("client %s failed while recording", label)
        result["error"] = traceback.format_exc()
        code = 1
    # The supervisor starts this slot's next client now: the load goes on while this one flushes.
    recorded_path(run_dir, label).touch()
    result["recording_s"] = round(time.monotonic() - started, 3)
    result["throttled_s"] = round(throttled_s, 3)
    flush_started = time.monotonic()
    result["flushed"] = client.flush(args.flush_timeout)
    result["flush_s"] = round(time.monotonic() - flush_started, 3)
    result["closed"] = client.close(timeout=10.0)
    if client.instance_id != instance_ids[-1]:
        instance_ids.append(client.instance_id)
    result["instance_ids"] = instance_ids
    result["stats"] = dataclasses.asdict(client.stats)
    result.update(recorder.manifest())
    write_json_atomically(manifest_path(run_dir, label), result)
    log.info(
        "client %s: %d operations, flushed %s, stats %s",
        label,
        recorder.operations,
        result["flushed"],
        result["stats"],
    )
    return code

