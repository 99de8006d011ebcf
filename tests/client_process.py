"""A GUI-like client process for the process-level tests.

It records workflows with tasks, log lines and audit events whose contents say who made
them, printing one JSON line per phase on stdout:
  {"phase": "started", "instance_id": ...}
  {"phase": "recorded", ...}            then, with --wait-after-record, waits for a line on stdin
  {"phase": "done", "flushed": bool, "workflow_ids": [...], "stats": {...}}
With --leave-running it leaves its last workflow and task running and waits on stdin
forever (for kill -9 tests), answering each line "stats" with {"phase": "stats", "stats": {...}}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from see_persistence import Client


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--label", default="c")
    parser.add_argument("--workflows", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--logs", type=int, default=2)
    parser.add_argument("--line-chars", type=int, default=0, help="pad each log line with dots to this")
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--flush-timeout", type=float, default=30.0)
    parser.add_argument("--spawn-writer", action="store_true")
    parser.add_argument("--wait-after-record", action="store_true")
    parser.add_argument("--wait-before-record", action="store_true")
    parser.add_argument("--leave-running", action="store_true")
    parser.add_argument(
        "--quick-succession", action="store_true", help="create, running, completed back to back"
    )
    args = parser.parse_args()

    client = Client(args.db, spawn_writer=args.spawn_writer)
    emit(phase="started", instance_id=client.instance_id)
    if args.wait_before_record:
        sys.stdin.readline()
    workflow_ids = []
    for w in range(args.workflows):
        name = f"{args.label}-wf-{w}"
        wid = client.create_workflow(name, metadata={"label": args.label, "n": w})
        workflow_ids.append(wid)
        client.update_workflow_status(wid, "running")
        if args.quick_succession:
            client.update_workflow_status(wid, "completed")
            continue
        for t in range(args.tasks):
            tid = client.create_task(wid, f"{name}-task-{t}", execution_order=t + 1)
            client.update_task_status(tid, "running")
            for line in range(args.logs):
                client.append_task_log(tid, f"{name}-task-{t}-line-{line}".ljust(args.line_chars, "."))
            client.update_task_status(tid, "completed", output=f"{name}-task-{t}-output")
        for e in range(args.events):
            client.log_audit_event("step", f"{name}-event-{e}", workflow_id=wid, data={"e": e})
        client.update_workflow_status(wid, "completed")
    if args.leave_running:
        wid = client.create_workflow(f"{args.label}-left-running")
        client.update_workflow_status(wid, "running")
        tid = client.create_task(wid, "still-running", execution_order=1)
        client.update_task_status(tid, "running")
        flushed = client.flush(args.flush_timeout)
        emit(
            phase="recorded",
            flushed=flushed,
            workflow_ids=workflow_ids,
            running_workflow=wid,
            running_task=tid,
            instance_id=client.instance_id,
        )
        # Wait here to be killed (or stopped); a line "stats" asks for the client's counters.
        for line in sys.stdin:
            if line.strip() != "stats":
                break
            emit(phase="stats", stats=dataclasses.asdict(client.stats))
        return 0
    emit(phase="recorded", workflow_ids=workflow_ids)
    if args.wait_after_record:
        sys.stdin.readline()
    flushed = client.flush(args.flush_timeout)
    stats = dataclasses.asdict(client.stats)
    client.close()
    emit(
        phase="done", flushed=flushed, workflow_ids=workflow_ids, instance_id=client.instance_id, stats=stats
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
