"""The ceiling: one process running the same statements with executemany, 1000 operations a transaction."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .baseline_naive import open_naive_connection
from .databases import create_schema, measure_disk, remove_db
from .figures import Cell, Phase
from .processes import Child
from .settings import Settings
from .workloads import MIX_OPS_PER_WORKFLOW, TASK_NAMES, json_text, now_text

CEILING_OPS_PER_TRANSACTION = 1000


def _audit_chunk(instance_id: str, workflow_id: str, start: int, count: int) -> list[tuple[str, list[Any]]]:
    from see_persistence.idgen import new_id
    from see_persistence.protocol import operations as ops
    from see_persistence.protocol import statements

    rows = [
        {
            "id": new_id(),
            "workflow_id": workflow_id,
            "task_id": None,
            "event_type": "bench_event",
            "message": "benchmark audit event",
            "data": json_text({"n": n}),
            "instance_id": instance_id,
            "at": now_text(),
        }
        for n in range(start, start + count)
    ]
    return [(statements.INSERTS[ops.AUDIT_EVENT], rows)]


def _mix_chunk(instance_id: str, start: int, workflows: int) -> list[tuple[str, list[Any]]]:
    """The mix's operations for `workflows` workflows, grouped by statement in a dependency-safe order."""
    from see_persistence.idgen import new_id
    from see_persistence.protocol import operations as ops
    from see_persistence.protocol import statements

    now = now_text()
    wf_insert, wf_running, wf_done = [], [], []
    task_insert, task_running, log1, log2, task_done, events = [], [], [], [], [], []
    for n in range(start, start + workflows):
        workflow_id = new_id()
        at = now_text()
        wf_insert.append(
            {
                "id": workflow_id,
                "workflow_name": "bench-workflow",
                "metadata": json_text({"branch": "main", "n": n}),
                "instance_id": instance_id,
                "at": at,
                "now": now,
            }
        )
        update = {"id": workflow_id, "error_message": None, "at": at, "now": now}
        wf_running.append({**update, "status": "running"})
        wf_done.append({**update, "status": "completed"})
        for order in range(1, 6):
            task_id = new_id()
            task_insert.append(
                {
                    "id": task_id,
                    "workflow_id": workflow_id,
                    "task_name": TASK_NAMES[order],
                    "execution_order": order,
                    "instance_id": instance_id,
                    "at": at,
                    "now": now,
                }
            )
            t_update = {"id": task_id, "error_message": None, "at": at, "now": now}
            task_running.append({**t_update, "status": "running", "output": None})
            log1.append({"id": task_id, "line": "step 1 of the task: ok", "now": now})
            log2.append({"id": task_id, "line": "step 2 of the task: ok", "now": now})
            task_done.append({**t_update, "status": "completed", "output": "ok"})
        for j in range(10):
            events.append(
                {
                    "id": new_id(),
                    "workflow_id": workflow_id,
                    "task_id": None,
                    "event_type": "workflow_step",
                    "message": "a step of the workflow finished",
                    "data": json_text({"j": j}),
                    "instance_id": instance_id,
                    "at": at,
                }
            )
    ins = statements.INSERTS
    return [
        (ins[ops.CREATE_WORKFLOW], wf_insert),
        (statements.WORKFLOW_STATUS_UPDATES["running"], wf_running),
        (ins[ops.CREATE_TASK], task_insert),
        (statements.TASK_STATUS_UPDATES["running"], task_running),
        (ins[ops.APPEND_TASK_LOG], log1),
        (ins[ops.APPEND_TASK_LOG], log2),
        (statements.TASK_STATUS_UPDATES["completed"], task_done),
        (ins[ops.AUDIT_EVENT], events),
        (statements.WORKFLOW_STATUS_UPDATES["completed"], wf_done),
    ]


def ceiling_main(args: argparse.Namespace) -> int:
    """Run the ceiling for `args.seconds` of SQLite time and print one JSON result."""
    from see_persistence.idgen import new_id

    conn = open_naive_connection(Path(args.db))
    instance_id, workflow_id = new_id(), new_id()
    per_chunk = CEILING_OPS_PER_TRANSACTION // MIX_OPS_PER_WORKFLOW
    ops_done, sql_s, cpu_s, n = 0, 0.0, 0.0, 0
    wall_deadline = time.monotonic() + 4 * args.seconds + 10
    while sql_s < args.seconds and time.monotonic() < wall_deadline:
        if args.workload == "audit":
            chunk = _audit_chunk(instance_id, workflow_id, n, CEILING_OPS_PER_TRANSACTION)
            n += CEILING_OPS_PER_TRANSACTION
            chunk_ops = CEILING_OPS_PER_TRANSACTION
        else:
            chunk = _mix_chunk(instance_id, n, per_chunk)
            n += per_chunk
            chunk_ops = per_chunk * MIX_OPS_PER_WORKFLOW
        c0, t0 = time.process_time(), time.perf_counter()
        conn.execute("BEGIN")
        for sql, rows in chunk:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
        sql_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        ops_done += chunk_ops
    conn.close()
    print(json.dumps({"ops": ops_done, "seconds": sql_s, "cpu_s": cpu_s}), flush=True)
    return 0


def run_ceiling(settings: Settings, workload: str) -> Cell:
    """One process, the same statements, executemany in transactions of 1000 operations."""
    cell = Cell("ceiling", workload, 1)
    cell_dir = settings.workdir / f"{workload}-ceiling"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    create_schema(db)
    child = Child(
        ["--role", "ceiling", "--db", str(db), "--workload", workload, "--seconds", str(settings.seconds)],
        cell_dir / "ceiling.log",
    )
    try:
        answer = child.recv(time.monotonic() + 5 * settings.seconds + 60)
        child.wait_exit(30)
    finally:
        child.kill()
    cell.flood = Phase(
        rate=answer["ops"] / answer["seconds"] if answer["seconds"] else 0.0,
        ops=answer["ops"],
        window_s=answer["seconds"],
        gui_cpu_us_per_op=answer["cpu_s"] / answer["ops"] * 1e6 if answer["ops"] else None,
        latency=None,
    )
    measure_disk(cell, db, raw=False)
    remove_db(db)
    return cell
