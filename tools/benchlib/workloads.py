"""The two workloads, as operation streams a GUI process calls (audit events only; the workflow mix)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

WORKLOADS = ("audit", "mix")
WORKLOAD_TITLES = {
    "audit": "audit events only",
    "mix": "workflow mix (38 operations, 16 rows per workflow)",
}
MIX_OPS_PER_WORKFLOW = 38
TASK_NAMES = ("", "checkout", "compile", "test", "package", "upload")


def json_text(value: dict[str, Any] | None) -> str:
    """JSON text the way the Client encodes a mapping ('{}' for None)."""
    if value is None:
        return "{}"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def uuid4_text() -> str:
    """A random UUID, the seed's id."""
    return str(uuid.uuid4())


def now_text() -> str:
    """RFC 3339 text of now, as the layer stores timestamps."""
    from see_persistence.protocol.timestamps import format_us

    return format_us(time.time_ns() // 1000)


def audit_stream(gui: Any) -> Iterator[int]:
    """Audit events forever; yields the nanoseconds each write call took."""
    from see_persistence.idgen import new_id

    pc = time.perf_counter_ns
    event = gui.log_audit_event
    workflow_id = new_id()  # the workflow these events are about (audit_events has no foreign key)
    n = 0
    while True:
        data = {"n": n}
        t0 = pc()
        event("bench_event", "benchmark audit event", workflow_id=workflow_id, data=data)
        t1 = pc()
        yield t1 - t0
        n += 1


def mix_stream(gui: Any) -> Iterator[int]:
    """Workflows of 38 operations forever; yields the nanoseconds each write call took."""
    pc = time.perf_counter_ns
    create_workflow, update_workflow = gui.create_workflow, gui.update_workflow_status
    create_task, update_task, append_log = gui.create_task, gui.update_task_status, gui.append_task_log
    event = gui.log_audit_event
    n = 0
    while True:
        metadata = {"branch": "main", "n": n}
        t0 = pc()
        workflow_id = create_workflow("bench-workflow", metadata)
        t1 = pc()
        yield t1 - t0
        t0 = pc()
        update_workflow(workflow_id, "running")
        t1 = pc()
        yield t1 - t0
        for order in range(1, 6):
            t0 = pc()
            task_id = create_task(workflow_id, TASK_NAMES[order], execution_order=order)
            t1 = pc()
            yield t1 - t0
            t0 = pc()
            update_task(task_id, "running")
            t1 = pc()
            yield t1 - t0
            t0 = pc()
            append_log(task_id, "step 1 of the task: ok")
            t1 = pc()
            yield t1 - t0
            t0 = pc()
            append_log(task_id, "step 2 of the task: ok")
            t1 = pc()
            yield t1 - t0
            t0 = pc()
            update_task(task_id, "completed", output="ok")
            t1 = pc()
            yield t1 - t0
        for j in range(10):
            data = {"j": j}
            t0 = pc()
            event("workflow_step", "a step of the workflow finished", workflow_id=workflow_id, data=data)
            t1 = pc()
            yield t1 - t0
        t0 = pc()
        update_workflow(workflow_id, "completed")
        t1 = pc()
        yield t1 - t0
        n += 1
