#!/usr/bin/env python3
"""Benchmark: see-persistence beside the design it replaces and beside SQLite's own ceiling.

    python tools/bench.py [--procs 1,2,4,8] [--seconds N] [--quick] [--output PATH | --no-write]

Measured in one invocation on this machine:

- naive: P GUI processes, each with its own SQLite connection (WAL, synchronous=NORMAL,
  busy_timeout 30 s), committing every operation in its own transaction; once with the ids our
  Client generates (time-ordered) and once with uuid4 ids (the seed's design as written);
- see-persistence: P GUI processes using `Client`, one writer process, the same operations;
- ceiling: one process running the same statements with executemany, 1000 operations a
  transaction: the limit of SQLite through Python here.

Workloads: audit events only; and a mix per workflow (create, running, 5 tasks each created,
running, 2 log lines, completed; 10 audit events; completed): 38 operations, 16 rows.
Then another program beside 4 flooding GUIs: plain sqlite3 inserting one workflow every 50 ms
(tools/other_writer.py), its write waits, the WAL's peak, and the GUIs' committed rows/s with
and without it in the same run (`--only other-writer` runs just this and prints it).
Then reads on a database of 1,000,000 workflows, each beside the same SQL through raw sqlite3
(`--reads-only` runs just these and prints them).
Every figure is printed beside its baseline and as a ratio; each target says met / not met.
The benchmark reports; it never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import queue
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

# tools/other_writer.py, "another program": a script of its own, imported for its log reader.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import other_writer as other_tool
import wal_index

log = logging.getLogger("bench")

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
OTHER_WRITER = SCRIPT.with_name("other_writer.py")  # the other program: a script of its own
DEFAULT_OUTPUT = ROOT / "docs" / "BENCHMARKS.md"

WORKLOADS = ("audit", "mix")
WORKLOAD_TITLES = {
    "audit": "audit events only",
    "mix": "workflow mix (38 operations, 16 rows per workflow)",
}
MIX_OPS_PER_WORKFLOW = 38
SYSTEMS = ("naive-same", "naive-uuid4", "ours")
SYSTEM_TITLES = {
    "naive-same": "naive, same ids",
    "naive-uuid4": "naive, uuid4 ids",
    "ours": "see-persistence",
    "ceiling": "ceiling (executemany)",
}

NAIVE_BUSY_TIMEOUT_S = 30.0
CEILING_OPS_PER_TRANSACTION = 1000
# Every 16th turn of a flooding GUI's loop, and first after every 16th wakeup of a paced one,
# the GUI also times a trivial call (CONTROL_DUMPS json.dumps of a small dict, about as long as
# a Client call): the machine's own tail for a call that length, in the same processes at the
# same moments, beside the write call's.
CONTROL_EVERY = 16
CONTROL_DUMPS = 1
CONTROL_SUFFIX = ".control"
LIGHT_FRACTION = 0.25  # ours only: send -> visible once more, each GUI at this fraction of the peak
FLOOD_BACKLOG_CAP = 10_000  # a flooding GUI pauses (untimed) above this many unconfirmed operations
READY_TIMEOUT_S = 45.0
PHASE_LEAD_S = 0.15  # commands go out this long before a phase starts
PHASE_GRACE_S = 60.0  # beyond a phase's stop time (a naive call may wait out a 30 s busy timeout)
FLUSH_TIMEOUT_S = 90.0
WRITER_STOP_TIMEOUT_S = 30.0
SAMPLE_INTERVAL_S = 0.05
PROBE_POLL_S = 0.001
READ_INSTANCES = 20
READ_CHILDREN_EVERY = 10  # every 10th workflow of the read database has 5 tasks and 10 events

TARGET_P = 4
TARGET_THROUGHPUT_VS_NAIVE = 4.0
TARGET_THROUGHPUT_VS_CEILING = 0.60
TARGET_CALL_P99_NS = 20_000
TARGET_CALL_P999_NS = 200_000
TARGET_CALL_MAX_NS = 5_000_000
TARGET_VISIBLE_P99_NS = 20_000_000
TARGET_READ_RATIO = 1.5
TARGET_LIST_CALL_NS = 5_000_000  # a list call of 50 rows at 1,000,000 workflows
TARGET_MATERIALIZE_ROWS_S = 200_000
TARGET_WRITER_RSS_BYTES = 60 * 1024 * 1024
TARGET_DISK_RATIO = 1.1
# Another program writing beside the GUIs (issue 13).
OTHER_P = 4  # flooding GUIs beside it
OTHER_WORKLOAD = "mix"
OTHER_SECONDS = 20.0  # the phase with the other program: 400 writes at 50 ms, so p99 is not the max
OTHER_QUICK_SECONDS = 2.0
OTHER_INTERVAL_S = 0.05
OTHER_BUSY_TIMEOUT_S = 30.0
OTHER_START_LEAD_S = 1.0  # the other program's interpreter starts before the phase does
OTHER_EXIT_GRACE_S = OTHER_BUSY_TIMEOUT_S + 15.0  # its last write may wait out its busy timeout
COUNTER_POLL_EVERY = 5  # the writer's counters every 5th WAL sample (0.25 s): each publication seen
TARGET_OTHER_WAIT_P99_NS = 250_000_000
TARGET_OTHER_WAIT_MAX_NS = 1_000_000_000
# The change feed (issue 14): watcher processes beside FEED_P GUIs and one writer.
FEED_P = 4
FEED_WORKLOAD = "mix"  # its tasks and workflows carry the writer's stamp (last_updated)
FEED_LIGHT_FRACTION = 0.25  # commit -> delivered with each GUI at this fraction of the peak
FEED_STOP_SECONDS = 60.0  # a watcher stopped with SIGSTOP this long while the GUIs flood
FEED_QUICK_STOP_SECONDS = 5.0
FEED_NO_WRITER_CHANGES = 5  # changes by plain sqlite3 with no writer running
FEED_QUICK_NO_WRITER_CHANGES = 3
FEED_ITEM_BYTES = 1024  # a waiting item, generously (a Change and its strings take about 500 B)
TARGET_FEED_DELIVERED_P99_NS = 5_000_000
TARGET_FEED_COST_RATIO = 0.95


TIMES = "\N{MULTIPLICATION SIGN}"


class BenchError(RuntimeError):
    """A measurement that could not be made (a process failed or missed its deadline)."""


# ================================================================================================
# GUI side: the drivers and the operation streams (run inside the load-generating subprocesses)
# ================================================================================================


def _json_text(value: dict[str, Any] | None) -> str:
    """JSON text the way the Client encodes a mapping ('{}' for None)."""
    if value is None:
        return "{}"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _uuid4_text() -> str:
    """A random UUID, the seed's id."""
    return str(uuid.uuid4())


def _now_text() -> str:
    """RFC 3339 text of now, as the layer stores timestamps."""
    from see_persistence.protocol.timestamps import format_us

    return format_us(time.time_ns() // 1000)


def open_naive_connection(db: Path) -> sqlite3.Connection:
    """A connection of the seed's design: WAL, synchronous=NORMAL, busy_timeout 30 s, autocommit."""
    conn = sqlite3.connect(
        str(db), isolation_level=None, timeout=NAIVE_BUSY_TIMEOUT_S, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(NAIVE_BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class NaiveGui:
    """The seed's design: the GUI runs the writer's own statements, one transaction per operation."""

    def __init__(self, db: Path, ids: str) -> None:
        from see_persistence.idgen import new_id
        from see_persistence.protocol import operations as ops
        from see_persistence.protocol import statements
        from see_persistence.protocol.timestamps import format_us

        self.conn = open_naive_connection(db)
        self.instance_id = new_id()
        self._new_id: Callable[[], str] = new_id if ids == "same" else _uuid4_text
        self._format_us = format_us
        self._insert_workflow = statements.INSERTS[ops.CREATE_WORKFLOW]
        self._insert_task = statements.INSERTS[ops.CREATE_TASK]
        self._append_log = statements.INSERTS[ops.APPEND_TASK_LOG]
        self._insert_event = statements.INSERTS[ops.AUDIT_EVENT]
        self._workflow_updates = statements.WORKFLOW_STATUS_UPDATES
        self._task_updates = statements.TASK_STATUS_UPDATES

    def _at(self) -> str:
        return self._format_us(time.time_ns() // 1000)

    def create_workflow(self, name: str, metadata: dict[str, Any] | None = None) -> str:
        """INSERT a pending workflow (its own transaction)."""
        record_id, at = self._new_id(), self._at()
        self.conn.execute(
            self._insert_workflow,
            {
                "id": record_id,
                "workflow_name": name,
                "metadata": _json_text(metadata),
                "instance_id": self.instance_id,
                "at": at,
                "now": at,
            },
        )
        return record_id

    def update_workflow_status(
        self, workflow_id: str, status: str, *, error_message: str | None = None
    ) -> None:
        """UPDATE a workflow's status by id."""
        at = self._at()
        self.conn.execute(
            self._workflow_updates[status],
            {"id": workflow_id, "status": status, "error_message": error_message, "at": at, "now": at},
        )

    def create_task(self, workflow_id: str, name: str, execution_order: int = 0) -> str:
        """INSERT a pending task."""
        record_id, at = self._new_id(), self._at()
        self.conn.execute(
            self._insert_task,
            {
                "id": record_id,
                "workflow_id": workflow_id,
                "task_name": name,
                "execution_order": execution_order,
                "instance_id": self.instance_id,
                "at": at,
                "now": at,
            },
        )
        return record_id

    def update_task_status(
        self, task_id: str, status: str, *, output: str | None = None, error_message: str | None = None
    ) -> None:
        """UPDATE a task's status (and output) by id."""
        at = self._at()
        self.conn.execute(
            self._task_updates[status],
            {
                "id": task_id,
                "status": status,
                "output": output,
                "error_message": error_message,
                "at": at,
                "now": at,
            },
        )

    def append_task_log(self, task_id: str, line: str) -> None:
        """UPDATE a task's logs with one more line."""
        self.conn.execute(self._append_log, {"id": task_id, "line": line, "now": self._at()})

    def log_audit_event(
        self,
        event_type: str,
        message: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """INSERT an audit event."""
        record_id = self._new_id()
        self.conn.execute(
            self._insert_event,
            {
                "id": record_id,
                "workflow_id": workflow_id,
                "task_id": task_id,
                "event_type": event_type,
                "message": message,
                "data": _json_text(data),
                "instance_id": self.instance_id,
                "at": self._at(),
            },
        )
        return record_id

    def backlog(self) -> int:
        """Nothing waits: every call committed before it returned."""
        return 0

    def committed(self, done: int) -> int:
        """Every operation done is committed."""
        return done

    def dropped(self) -> int:
        """The naive design never drops (it blocks instead)."""
        return 0

    def messages(self, done: int) -> int:
        """One transaction per operation."""
        return done

    def flush(self, timeout: float) -> bool:
        """Nothing to flush."""
        return True

    def close(self, timeout: float) -> bool:
        """Close the connection."""
        self.conn.close()
        return True


class OursGui:
    """A GUI process using see-persistence's Client (the write calls are the Client's own methods)."""

    def __init__(self, db: Path) -> None:
        from see_persistence import Client

        self.client = Client(db)
        self.instance_id = self.client.instance_id
        self.create_workflow = self.client.create_workflow
        self.update_workflow_status = self.client.update_workflow_status
        self.create_task = self.client.create_task
        self.update_task_status = self.client.update_task_status
        self.append_task_log = self.client.append_task_log
        self.log_audit_event = self.client.log_audit_event

    def backlog(self) -> int:
        """Operations held by the outbox (not yet confirmed)."""
        return self.client.stats.buffered

    def committed(self, done: int) -> int:
        """Operations the writer confirmed as committed."""
        return self.client.stats.confirmed

    def dropped(self) -> int:
        """Operations refused because the outbox was full."""
        return self.client.stats.dropped

    def messages(self, done: int) -> int:
        """Messages handed to the socket so far."""
        return self.client.stats.messages

    def flush(self, timeout: float) -> bool:
        """Client.flush: True once everything sent is committed."""
        return self.client.flush(timeout)

    def close(self, timeout: float) -> bool:
        """Client.close with a bounded flush."""
        return self.client.close(timeout=timeout)


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


TASK_NAMES = ("", "checkout", "compile", "test", "package", "upload")


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


@dataclass
class _Mark:
    """Where a phase stood at one instant (inside a GUI process)."""

    at: float
    done: int
    committed: int
    cpu: float
    messages: int


def _mark(gui: Any, done: int) -> _Mark:
    return _Mark(time.monotonic(), done, gui.committed(done), time.process_time(), gui.messages(done))


def run_phase(gui: Any, stream: Iterator[int], cmd: dict[str, Any]) -> dict[str, Any]:
    """Run one flood or paced phase between the absolute (monotonic) times the parent gave."""
    start, warm, stop = float(cmd["start"]), float(cmd["warm"]), float(cmd["stop"])
    cap, rate = int(cmd.get("cap", 0)), float(cmd.get("rate", 0.0))
    end_at_cap = bool(cmd.get("end_at_cap", False))
    lat = array("q")
    append = lat.append
    control = array("q")
    mono = time.monotonic
    pc = time.perf_counter_ns
    dumps = json.dumps

    def time_trivial_call(n: int) -> None:
        t0 = pc()
        for _ in range(CONTROL_DUMPS):
            dumps({"n": n})
        control.append(pc() - t0)

    delay = start - mono()
    if delay > 0:
        time.sleep(delay)
    begin = _mark(gui, 0)
    warm_mark: _Mark | None = begin if warm <= start else None
    done = 0
    dropped_before = gui.dropped()
    if cmd["mode"] == "flood":
        while True:
            append(next(stream))
            done += 1
            if done % CONTROL_EVERY == 0 and warm_mark is not None:
                time_trivial_call(done)
            now = mono()
            if now >= stop:
                break
            if done & 63 == 0:
                if warm_mark is None and now >= warm:
                    warm_mark = _mark(gui, done)
                if cap and gui.backlog() > cap:  # an untimed pause, so the outbox never drops
                    if end_at_cap:
                        break
                    while gui.backlog() > cap // 2 and mono() < stop:
                        time.sleep(0.001)
    else:
        interval = 1.0 / rate
        wakeups = 0
        while True:
            now = mono()
            if now >= stop:
                break
            if warm_mark is None and now >= warm:
                warm_mark = _mark(gui, done)
            due = min(int((now - start) * rate) + 1, done + 1000)
            wakeups += 1
            if wakeups % CONTROL_EVERY == 0 and warm_mark is not None:
                # The trivial call first after this wakeup, on caches as cold as a write call
                # meets there; the write calls after it (warmer than usual) go untimed.
                time_trivial_call(done)
                while done < due:
                    next(stream)
                    done += 1
            else:
                while done < due:
                    append(next(stream))
                    done += 1
            wait = start + done * interval - mono()
            if wait > 0:
                time.sleep(wait)
    end = _mark(gui, done)
    if warm_mark is None:
        warm_mark = begin
    Path(cmd["samples"]).write_bytes(lat.tobytes())
    if control:
        Path(cmd["samples"] + CONTROL_SUFFIX).write_bytes(control.tobytes())
    return {
        "ops": done,
        "warm_index": warm_mark.done,  # every call before the warm mark is timed, so its index too
        "window_s": end.at - warm_mark.at,
        "window_ops": end.done - warm_mark.done,
        "window_committed": end.committed - warm_mark.committed,
        "cpu_s": end.cpu - warm_mark.cpu,
        "window_messages": end.messages - warm_mark.messages,
        "dropped": gui.dropped() - dropped_before,
        "backlog": gui.backlog(),
    }


def gui_main(args: argparse.Namespace) -> int:
    """A load-generating GUI process: JSON commands on stdin, one JSON result per line on stdout."""
    db = Path(args.db)
    gui: Any = (
        OursGui(db)
        if args.system == "ours"
        else NaiveGui(db, "same" if args.system == "naive-same" else "uuid4")
    )
    if args.system == "ours" and not gui.flush(READY_TIMEOUT_S):
        print(json.dumps({"error": "the writer did not confirm this client's hello"}), flush=True)
        return 1
    stream = audit_stream(gui) if args.workload == "audit" else mix_stream(gui)
    print(json.dumps({"ready": True, "pid": os.getpid(), "instance_id": gui.instance_id}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "phase":
            print(json.dumps(run_phase(gui, stream, cmd)), flush=True)
        elif cmd["cmd"] == "flush":
            t0 = time.monotonic()
            ok = gui.flush(float(cmd["timeout"]))
            print(json.dumps({"flushed": ok, "seconds": time.monotonic() - t0}), flush=True)
        elif cmd["cmd"] == "finish":
            ok = gui.close(float(cmd["timeout"]))
            print(json.dumps({"closed": ok, "dropped": gui.dropped()}), flush=True)
            return 0
    gui.close(1.0)  # the parent went away
    return 0


# ================================================================================================
# Watcher side: a process subscribed to the change feed (run inside the watcher subprocesses)
# ================================================================================================

WATCHER_GET_TIMEOUT_S = 0.2  # how often the consumer looks whether it is asked to stop


def watcher_main(args: argparse.Namespace) -> int:
    """A watcher process: `Reader.watch()` taking every item as it comes; JSON commands on stdin.

    Each item is kept with the wall-clock instant the watcher handed it over, so the parent can
    set it beside the instants stored in the records (the Client's call, the writer's stamp).
    """
    from see_persistence import Reader
    from see_persistence.reader.watch import Change

    reader = Reader(Path(args.db))
    watcher = reader.watch()
    # (wall ns when handed over, kind or "resync", record id or cause, status or None)
    deliveries: list[tuple[int, str, str, str | None]] = []
    last_resync_ns: dict[str, int] = {}
    stop = threading.Event()

    def consume() -> None:
        get, append, now = watcher.get, deliveries.append, time.time_ns
        while not stop.is_set():
            item = get(WATCHER_GET_TIMEOUT_S)
            if item is None:
                continue
            at = now()
            if isinstance(item, Change):
                append((at, item.kind.value, item.id, item.status))
            else:
                append((at, "resync", item.cause.value, None))
                last_resync_ns[item.cause.value] = at

    consumer = threading.Thread(target=consume, name="consumer", daemon=True)
    consumer.start()

    def stats() -> dict[str, Any]:
        s = watcher.stats
        return {
            "notices": s.notices,
            "changes": s.changes,
            "resyncs": s.resyncs,
            "by_cause": dict(s.by_cause),
            "overflowed": s.overflowed,
            "polling": s.polling,
            "delivered": len(deliveries),
            "pending": watcher.pending(),
            "last_resync_ns": dict(last_resync_ns),
        }

    # Ready once a notice came: the subscription is live (a SUB connects in the background).
    deadline = time.monotonic() + READY_TIMEOUT_S
    while watcher.stats.notices == 0 or not deliveries:
        if time.monotonic() >= deadline:
            print(json.dumps({"error": "no feed notice within the ready timeout"}), flush=True)
            return 1
        stop.wait(0.01)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "stats":
                print(json.dumps(stats()), flush=True)
            elif cmd["cmd"] == "dump":
                taken = deliveries[int(cmd.get("start", 0)) : len(deliveries)]
                Path(cmd["path"]).write_text(json.dumps(taken), encoding="utf-8")
                print(json.dumps({"dumped": len(taken)}), flush=True)
            elif cmd["cmd"] == "finish":
                print(json.dumps(stats()), flush=True)
                return 0
    finally:
        stop.set()
        consumer.join(timeout=5)
        watcher.close()
        reader.close()
    return 0


# ================================================================================================
# The ceiling: one process, the same statements, executemany in transactions of 1000 operations
# ================================================================================================


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
            "data": _json_text({"n": n}),
            "instance_id": instance_id,
            "at": _now_text(),
        }
        for n in range(start, start + count)
    ]
    return [(statements.INSERTS[ops.AUDIT_EVENT], rows)]


def _mix_chunk(instance_id: str, start: int, workflows: int) -> list[tuple[str, list[Any]]]:
    """The mix's operations for `workflows` workflows, grouped by statement in a dependency-safe order."""
    from see_persistence.idgen import new_id
    from see_persistence.protocol import operations as ops
    from see_persistence.protocol import statements

    now = _now_text()
    wf_insert, wf_running, wf_done = [], [], []
    task_insert, task_running, log1, log2, task_done, events = [], [], [], [], [], []
    for n in range(start, start + workflows):
        workflow_id = new_id()
        at = _now_text()
        wf_insert.append(
            {
                "id": workflow_id,
                "workflow_name": "bench-workflow",
                "metadata": _json_text({"branch": "main", "n": n}),
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
                    "data": _json_text({"j": j}),
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


# ================================================================================================
# The parent: processes, samplers, probes
# ================================================================================================


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class Child:
    """A `bench.py --role ...` subprocess speaking JSON lines; its stderr goes to a log file."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def send(self, obj: dict[str, Any]) -> None:
        """Write one JSON command line."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise BenchError(f"pid {self.proc.pid} is gone: {exc}\n{_tail(self.log_path)}") from None

    def recv(self, deadline: float) -> dict[str, Any]:
        """The next JSON line, by `deadline` (monotonic)."""
        try:
            line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(f"pid {self.proc.pid} missed its deadline\n{_tail(self.log_path)}") from None
        if not line:
            self.proc.wait(timeout=10)
            raise BenchError(
                f"pid {self.proc.pid} exited with {self.proc.returncode}\n{_tail(self.log_path)}"
            )
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise BenchError(f"pid {self.proc.pid}: {result['error']}\n{_tail(self.log_path)}")
        return result

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to end; None if it did not in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process if it still runs; close its pipes and log."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._log.close()


class Children:
    """A group of GUI children, all killed in `close()`."""

    def __init__(self) -> None:
        self.members: list[Child] = []

    def start(self, args: Sequence[str], log_path: Path) -> Child:
        """Start one child."""
        child = Child(args, log_path)
        self.members.append(child)
        return child

    def broadcast(self, make: Callable[[int], dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
        """Send each child its command, then collect every answer by `deadline`."""
        for index, child in enumerate(self.members):
            child.send(make(index))
        return [child.recv(deadline) for child in self.members]

    def close(self) -> None:
        """Kill every child still running."""
        for child in self.members:
            child.kill()


class WriterProcess:
    """`python -m see_persistence writer --db PATH` (optionally under cProfile)."""

    def __init__(self, db: Path, log_path: Path, profile: Path | None = None) -> None:
        self.db = db
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in kill()
        prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *prefix,
                "-m",
                "see_persistence",
                "--log-level",
                "WARNING",
                "writer",
                "--db",
                str(db),
            ],
            stdout=self._log,
            stderr=self._log,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until this process holds the lease (alive, pid matches)."""
        from see_persistence import Reader

        deadline = time.monotonic() + timeout
        reader = Reader(self.db)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"writer exited with {self.proc.returncode}\n{_tail(self.log_path)}")
                with contextlib.suppress(FileNotFoundError, sqlite3.Error):
                    status = reader.get_writer_status()
                    if status is not None and status.alive and status.pid == self.pid:
                        return
                if time.monotonic() >= deadline:
                    raise BenchError(f"writer pid {self.pid} did not hold the lease within {timeout} s")
                time.sleep(0.02)
        finally:
            reader.close()

    def peak_rss_hwm(self) -> int | None:
        """The kernel's high-water mark of the writer's RSS (VmHWM), if readable."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def stop(self, timeout: float = WRITER_STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait for the exit code (killed, -9, at the deadline)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("writer pid %d did not stop within %s s; killing it", self.pid, timeout)
                self.kill()
                return -9
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the writer if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._log.close()


class Sampler(threading.Thread):
    """Samples one process's CPU time and RSS with psutil every SAMPLE_INTERVAL_S."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name=f"sampler-{pid}")
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, rss bytes)
        self.machine: list[tuple[float, float]] = []  # (monotonic, busy CPU seconds of all CPUs)
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped or the process is gone."""
        import psutil

        try:
            process = psutil.Process(self.pid)
            while True:
                with process.oneshot():
                    times = process.cpu_times()
                    rss = process.memory_info().rss
                now = time.monotonic()
                self.samples.append((now, times.user + times.system, rss))
                machine = psutil.cpu_times()
                self.machine.append((now, sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)))
                if self._stop_event.wait(SAMPLE_INTERVAL_S):
                    return
        except psutil.Error:
            return

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=5)

    def cpu_fraction(self, t0: float, t1: float) -> float | None:
        """CPU seconds per wall second between the samples nearest t0 and t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def machine_busy(self, t0: float, t1: float) -> float | None:
        """Cores busy (all processes, kernel included) per wall second between t0 and t1."""
        inside = [s for s in self.machine if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def peak_rss(self) -> int | None:
        """The largest RSS sampled."""
        return max((s[2] for s in self.samples), default=None)


class LoadWatcher(threading.Thread):
    """CPU used by processes outside this benchmark's own process tree, sampled with psutil."""

    def __init__(self, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True, name="load-watcher")
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (monotonic, cores used by other processes)
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        import psutil

        me = os.getpid()
        last: dict[int, tuple[float, float]] = {}  # pid -> (create time, cpu seconds)
        last_at: float | None = None
        while True:
            now = time.monotonic()
            parents: dict[int, int] = {}
            cpu: dict[int, tuple[float, float]] = {}
            for proc in psutil.process_iter(["ppid", "cpu_times", "create_time"]):
                info = proc.info
                if info["cpu_times"] is None:
                    continue
                parents[proc.pid] = info["ppid"] or 0
                cpu[proc.pid] = (
                    info["create_time"] or 0.0,
                    info["cpu_times"].user + info["cpu_times"].system,
                )
            ours = {me}
            for pid in parents:  # a process is ours if `me` is among its ancestors
                chain, seen = pid, 0
                while chain and chain not in ours and seen < 64:
                    chain, seen = parents.get(chain, 0), seen + 1
                if chain in ours:
                    ours.add(pid)
            if last_at is not None:
                used = 0.0
                for pid, (created, seconds) in cpu.items():
                    if pid in ours:
                        continue
                    before = last.get(pid)
                    used += seconds - before[1] if before and before[0] == created else seconds
                self.samples.append((now, max(0.0, used) / (now - last_at)))
            last, last_at = cpu, now
            if self._stop_event.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=10)

    def between(self, t0: float, t1: float) -> tuple[float, float] | None:
        """Mean and peak cores used by other processes between two monotonic times."""
        inside = [cores for at, cores in self.samples if t0 < at <= t1 + self.interval_s]
        return (sum(inside) / len(inside), max(inside)) if inside else None


def _parse_timestamp_us(text: str) -> int:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(value.timestamp() * 1_000_000)


class VisibilityProbe(threading.Thread):
    """A Reader polling for new audit events: when it sees each row, minus when its call was made."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True, name="visibility-probe")
        self.db = db
        self.seen: list[tuple[int, int]] = []  # (wall µs of the call, ns until a Reader saw the row)
        self.polls = 0
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Poll every PROBE_POLL_S until stopped."""
        from see_persistence import Reader

        reader = Reader(self.db)
        try:
            last = reader.query("SELECT COALESCE(MAX(rowid), 0) FROM audit_events")[0][0]
            while not self._stop_event.is_set():
                rows = reader.query(
                    "SELECT rowid, timestamp FROM audit_events WHERE rowid > ? ORDER BY rowid LIMIT 20000",
                    (last,),
                )
                seen_us = time.time_ns() // 1000  # an upper bound: the rows were not there one poll ago
                self.polls += 1
                for _rowid, text in rows:
                    at_us = _parse_timestamp_us(text)
                    self.seen.append((at_us, (seen_us - at_us) * 1000))
                if rows:
                    last = rows[-1][0]
                time.sleep(PROBE_POLL_S)
        except Exception as exc:  # reported beside the figure, never raised into the run
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop polling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=5)

    def latency(self, warm: float, stop: float, cell: Cell) -> Latency | None:
        """Percentiles of the rows whose calls were made inside the (monotonic) window."""
        if self.error:
            cell.notes.append(f"visibility probe failed: {self.error}")
        lo, hi = _wall_us(warm), _wall_us(stop)
        return Latency.of([ns for at_us, ns in self.seen if lo <= at_us <= hi])


# ================================================================================================
# Figures
# ================================================================================================

PLOT_QUANTILES = tuple(1 - 10 ** (-k / 10) for k in range(3, 41))  # 0.5 ... 0.9999


@dataclass
class Latency:
    """Percentiles of all samples (nearest rank), in nanoseconds."""

    n: int
    p50: int
    p99: int
    p999: int
    max: int
    curve: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def of(cls, samples: Sequence[int]) -> Latency | None:
        """Percentiles of `samples` (None if there are none)."""
        if not samples:
            return None
        ordered = sorted(samples)
        n = len(ordered)

        def q(fraction: float) -> int:
            return int(ordered[min(n - 1, max(0, math.ceil(fraction * n) - 1))])

        return cls(n, q(0.50), q(0.99), q(0.999), int(ordered[-1]), [(f, q(f)) for f in PLOT_QUANTILES])


@dataclass
class Phase:
    """One phase of a group of GUI processes."""

    rate: float  # committed operations per second in the window, summed over the GUI processes
    ops: int
    window_s: float
    gui_cpu_us_per_op: float | None
    latency: Latency | None
    dropped: int = 0
    per_gui_rate: float = 0.0
    ops_per_message: float | None = None
    control: Latency | None = None  # the trivial call timed in the same loop (see CONTROL_EVERY)


@dataclass
class Cell:
    """Everything measured for one system, one workload and one P."""

    system: str
    workload: str
    procs: int
    flood: Phase | None = None
    paced: Phase | None = None
    absent: Phase | None = None
    visible: Latency | None = None
    light: Phase | None = None  # ours only: each GUI at LIGHT_FRACTION of the peak rate
    visible_light: Latency | None = None
    machine_busy_light: float | None = None
    writer_cpu: float | None = None  # CPU seconds per wall second while flooding
    writer_cpu_us_per_op: float | None = None
    writer_cpu_paced: float | None = None  # CPU seconds per wall second at half the peak rate
    machine_busy_paced: float | None = None  # cores busy on the whole machine at half the peak rate
    writer_rss: int | None = None
    writer_rss_hwm: int | None = None
    writer_exit: list[int] = field(default_factory=list)
    bytes_per_unit: float | None = None  # per event (audit), per workflow (mix)
    raw_bytes_per_unit: float | None = None  # the same rows copied into a fresh file
    rows: int = 0
    drain_s: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ReadFigure:
    """One query through the Reader and the same SQL through raw sqlite3."""

    name: str
    rows_per_call: float
    ours_ns: float
    raw_ns: float
    calls: int
    limit_ns: float | None = None  # a target on the Reader's time per call, if it has one


@dataclass
class Reads:
    """The read benchmark."""

    workflows: int
    tasks: int
    events: int
    build_s: float
    figures: list[ReadFigure] = field(default_factory=list)
    materialize: list[tuple[str, float, float]] = field(default_factory=list)  # name, ours rows/s, raw rows/s
    error: str | None = None


@dataclass
class Settings:
    """What one run does."""

    procs: list[int]
    seconds: float
    warmup: float
    read_workflows: int
    read_budget_s: float
    materialize_rows: int
    absent_cap: int
    quick: bool
    workdir: Path
    read_cache: Path | None
    profile_dir: Path | None
    other_seconds: float = OTHER_SECONDS
    feed_stop_seconds: float = FEED_STOP_SECONDS


@dataclass
class OtherWriter:
    """Another program writing beside OTHER_P flooding GUIs: without it, with it, without it again."""

    procs: int = OTHER_P
    workload: str = OTHER_WORKLOAD
    interval_s: float = OTHER_INTERVAL_S
    phases: dict[str, Phase] = field(default_factory=dict)  # "without, before", "with", "without, after"
    wal_peak: dict[str, int | None] = field(default_factory=dict)  # per phase: the WAL's length, frames
    wal_file_peak: dict[str, int | None] = field(default_factory=dict)  # per phase: the -wal file, bytes
    commit_max_us: dict[str, int | None] = field(default_factory=dict)  # per phase: the writer's own figure
    waits: Latency | None = None  # the other program's writes, in the window of the middle phase
    writes: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rows_checked: str = ""
    wal_bound_pages: int | None = None  # WAL_RESTART_PAGES
    page_size: int | None = None
    writer_exit: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Results:
    """Everything one run measured."""

    settings: Settings
    cells: dict[tuple[str, str, int], Cell] = field(default_factory=dict)
    ceilings: dict[str, Cell] = field(default_factory=dict)
    reads: Reads | None = None
    other_writer: OtherWriter | None = None
    feed: FeedSection | None = None
    started: str = ""
    duration_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    profiles: list[tuple[str, str]] = field(default_factory=list)
    floor: Latency | None = None
    # P processes flooding a trivial call at once: (processes, json.dumps per call, latency)
    busy_floors: list[tuple[int, int, Latency]] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)
    other_load: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # section -> mean, max


# ================================================================================================
# Databases: schema, disk use, raw copies
# ================================================================================================


def create_schema(db: Path) -> None:
    """Create the layer's tables and indexes (what the writer creates) in a fresh file, in WAL."""
    from see_persistence.writer.storage import upgrade_schema

    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        upgrade_schema(conn, time.time_ns() // 1000)  # the writer's own upgrade, column additions too
    finally:
        conn.close()


def used_bytes(db: Path) -> int:
    """Bytes of the file's pages in use, after a checkpoint (no process may be writing)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)
    finally:
        conn.close()


def count_rows(db: Path, table: str) -> int:
    """COUNT(*) of one table."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def raw_copy_bytes(src: Path, dst: Path) -> int:
    """Insert the same rows, in the same order, into a fresh file with the same schema; its bytes in use."""
    from see_persistence.protocol.schema import SEED_TABLES

    create_schema(dst)
    conn = sqlite3.connect(str(dst), isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{quote(str(src))}?mode=ro",))
        conn.execute("BEGIN")
        for table in SEED_TABLES:
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table} ORDER BY rowid")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    return used_bytes(dst)


def measure_disk(cell: Cell, db: Path, raw: bool) -> None:
    """Bytes per event (audit) or per workflow (mix), and the same rows inserted raw."""
    table = "audit_events" if cell.workload == "audit" else "workflow_executions"
    cell.rows = count_rows(db, table)
    if not cell.rows:
        return
    cell.bytes_per_unit = used_bytes(db) / cell.rows
    if raw:
        copy = db.with_name("raw-copy.db")
        cell.raw_bytes_per_unit = raw_copy_bytes(db, copy) / cell.rows
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{copy}{suffix}").unlink()


def remove_db(db: Path) -> None:
    """Delete a benchmark database and its -wal/-shm files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{db}{suffix}").unlink()


# ================================================================================================
# The write benchmark
# ================================================================================================


def _merge_samples(paths: Sequence[Path], warm_indexes: Sequence[int]) -> list[int]:
    merged: list[int] = []
    for path, warm in zip(paths, warm_indexes, strict=True):
        samples = array("q")
        samples.frombytes(path.read_bytes())
        merged.extend(samples[warm:])
        with contextlib.suppress(OSError):
            path.unlink()
    return merged


def run_gui_phase(
    group: Children,
    cell_dir: Path,
    name: str,
    mode: str,
    seconds: float,
    warmup: float,
    *,
    rate: float = 0.0,
    cap: int = 0,
    end_at_cap: bool = False,
    start_at: float | None = None,
) -> tuple[Phase, tuple[float, float]]:
    """Run one phase in every GUI of the group; return it and its (warm, stop) monotonic window.

    `start_at`: the (monotonic) start, when something else must line up with the phase.
    """
    start = start_at if start_at is not None else time.monotonic() + PHASE_LEAD_S
    warm, stop = start + warmup, start + warmup + seconds
    paths = [cell_dir / f"{name}-{i}.lat" for i in range(len(group.members))]

    def command(index: int) -> dict[str, Any]:
        return {
            "cmd": "phase",
            "mode": mode,
            "start": start,
            "warm": warm,
            "stop": stop,
            "rate": rate,
            "cap": cap,
            "end_at_cap": end_at_cap,
            "samples": str(paths[index]),
        }

    answers = group.broadcast(command, stop + PHASE_GRACE_S)
    merged = _merge_samples(paths, [a["warm_index"] for a in answers])
    control_paths = [Path(str(path) + CONTROL_SUFFIX) for path in paths]
    present = [path for path in control_paths if path.exists()]
    control = Latency.of(_merge_samples(present, [0] * len(present))) if present else None
    total_rate = sum(a["window_committed"] / a["window_s"] for a in answers if a["window_s"] > 0)
    window_ops = sum(a["window_committed"] for a in answers)
    cpu = sum(a["cpu_s"] for a in answers)
    messages = sum(a["window_messages"] for a in answers)
    phase = Phase(
        rate=total_rate,
        ops=sum(a["ops"] for a in answers),
        window_s=max(a["window_s"] for a in answers),
        gui_cpu_us_per_op=(cpu / window_ops * 1e6) if window_ops else None,
        latency=Latency.of(merged),
        dropped=sum(a["dropped"] for a in answers),
        per_gui_rate=rate,
        ops_per_message=sum(a["window_ops"] for a in answers) / messages if messages else None,
        control=control,
    )
    return phase, (warm, stop)


def _wall_us(mono: float) -> int:
    return int((mono - time.monotonic() + time.time()) * 1_000_000)


def _start_guis(group: Children, cell_dir: Path, system: str, db: Path, workload: str, procs: int) -> None:
    for i in range(procs):
        group.start(
            ["--role", "gui", "--system", system, "--db", str(db), "--workload", workload],
            cell_dir / f"gui-{i}.log",
        )
    deadline = time.monotonic() + READY_TIMEOUT_S + 5 * procs
    for child in group.members:
        child.recv(deadline)


def run_naive_group(settings: Settings, workload: str, procs: int, system: str) -> Cell:
    """The seed's design: P GUI processes committing each operation themselves."""
    cell = Cell(system, workload, procs)
    cell_dir = settings.workdir / f"{workload}-{system}-{procs}"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    create_schema(db)
    group = Children()
    try:
        _start_guis(group, cell_dir, system, db, workload, procs)
        cell.flood, _ = run_gui_phase(group, cell_dir, "flood", "flood", settings.seconds, settings.warmup)
        if system == "naive-same" and cell.flood.rate > 0:
            cell.paced, cell.visible, _ = _paced_phase(
                settings, group, cell_dir, db, cell, procs, 0.5, "paced"
            )
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
    finally:
        group.close()
    measure_disk(cell, db, raw=False)
    remove_db(db)
    return cell


def _paced_phase(
    settings: Settings,
    group: Children,
    cell_dir: Path,
    db: Path,
    cell: Cell,
    procs: int,
    fraction: float,
    name: str,
) -> tuple[Phase, Latency | None, tuple[float, float]]:
    """Each GUI at `fraction` of the flood's committed rate, with the visibility probe watching."""
    assert cell.flood is not None
    rate = cell.flood.rate * fraction / procs
    probe = VisibilityProbe(db)
    probe.start()
    try:
        phase, window = run_gui_phase(
            group, cell_dir, name, "paced", settings.seconds, settings.warmup / 2, rate=rate
        )
    finally:
        probe.stop()
    return phase, probe.latency(*window, cell), window


def run_ours_group(settings: Settings, workload: str, procs: int) -> Cell:
    """P GUI processes using Client and one writer: flood, half the peak rate, then writer absent."""
    cell = Cell("ours", workload, procs)
    cell_dir = settings.workdir / f"{workload}-ours-{procs}"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    profile = settings.profile_dir / f"writer-{workload}-{procs}.prof" if settings.profile_dir else None
    writer = WriterProcess(db, cell_dir / "writer.log", profile)
    sampler: Sampler | None = None
    group = Children()
    try:
        writer.wait_ready()
        sampler = Sampler(writer.pid)
        sampler.start()
        _start_guis(group, cell_dir, "ours", db, workload, procs)

        cell.flood, (warm, stop) = run_gui_phase(
            group, cell_dir, "flood", "flood", settings.seconds, settings.warmup, cap=FLOOD_BACKLOG_CAP
        )
        cell.writer_cpu = sampler.cpu_fraction(warm, stop)
        if cell.writer_cpu is not None and cell.flood.rate > 0:
            cell.writer_cpu_us_per_op = cell.writer_cpu / cell.flood.rate * 1e6
        flushed = group.broadcast(
            lambda _i: {"cmd": "flush", "timeout": FLUSH_TIMEOUT_S}, time.monotonic() + FLUSH_TIMEOUT_S + 30
        )
        cell.drain_s = max(a["seconds"] for a in flushed)
        if not all(a["flushed"] for a in flushed):
            cell.notes.append("a flush after the flood timed out")

        if cell.flood.rate == 0:
            cell.notes.append(
                f"no commit was confirmed inside the flood's {settings.seconds:g} s window (shorter than"
                " the round trip through the backlog the GUIs queued), so the paced phases did not run"
            )
        if cell.flood.rate > 0:
            cell.paced, cell.visible, window = _paced_phase(
                settings, group, cell_dir, db, cell, procs, 0.5, "paced"
            )
            cell.writer_cpu_paced = sampler.cpu_fraction(*window)
            cell.machine_busy_paced = sampler.machine_busy(*window)
        _flush_all(group, cell, "the paced phase")
        if cell.flood.rate > 0:
            # The same again, lighter: does send -> visible meet its target once the machine
            # has cores to spare? (At half the peak rate paced GUIs keep it nearly busy.)
            cell.light, cell.visible_light, window = _paced_phase(
                settings, group, cell_dir, db, cell, procs, LIGHT_FRACTION, "light"
            )
            cell.machine_busy_light = sampler.machine_busy(*window)
        _flush_all(group, cell, "the light phase")
        committed_ops = sum(phase.ops for phase in (cell.flood, cell.paced, cell.light) if phase)
        _verify(cell, db, committed_ops)

        cell.writer_rss = sampler.peak_rss()
        cell.writer_rss_hwm = writer.peak_rss_hwm()
        sampler.stop()
        cell.writer_exit.append(writer.stop())

        # The writer is gone: the GUIs keep calling (flooding, up to absent_cap buffered each).
        cell.absent, _ = run_gui_phase(
            group,
            cell_dir,
            "absent",
            "flood",
            settings.seconds,
            0.0,
            cap=settings.absent_cap,
            end_at_cap=True,
        )
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 0.3}, time.monotonic() + 60)
        for child in group.members:
            child.wait_exit(10)
    finally:
        group.close()
        if sampler is not None:
            sampler.stop()
        writer.kill()
    if profile is not None and profile.exists():
        cell.notes.append(f"writer profile: {profile}")
    measure_disk(cell, db, raw=True)
    remove_db(db)
    return cell


def _flush_all(group: Children, cell: Cell, after: str) -> None:
    flushed = group.broadcast(
        lambda _i: {"cmd": "flush", "timeout": FLUSH_TIMEOUT_S}, time.monotonic() + FLUSH_TIMEOUT_S + 30
    )
    if not all(a["flushed"] for a in flushed):
        cell.notes.append(f"a flush after {after} timed out")


def _verify(cell: Cell, db: Path, committed_ops: int) -> None:
    """Check the file holds what the GUIs sent (audit: one row per call; any: no dead letters)."""
    from see_persistence import Reader

    reader = Reader(db)
    try:
        dead = reader.query("SELECT COUNT(*) FROM dead_letters")[0][0]
        if dead:
            cell.notes.append(f"{dead} dead letters")
        if cell.workload == "audit":
            rows = reader.query("SELECT COUNT(*) FROM audit_events")[0][0]
            if rows != committed_ops:
                cell.notes.append(f"audit_events holds {rows} rows; the GUIs made {committed_ops} calls")
            elif not dead:
                cell.notes.append(f"verified: {rows} audit events, one per call, no dead letters")
        else:
            workflows = reader.query("SELECT COUNT(*) FROM workflow_executions")[0][0]
            expected = math.ceil(committed_ops / MIX_OPS_PER_WORKFLOW)
            cell.notes.append(f"{workflows} workflows (~{expected} expected), {dead} dead letters")
    finally:
        reader.close()


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


# ================================================================================================
# Another program writing beside flooding GUIs
# ================================================================================================


class FileWatcher(threading.Thread):
    """The WAL every SAMPLE_INTERVAL_S, and the longest batch commit the writer publishes.

    The WAL's length is read from the wal-index (tools/wal_index.py): the -wal file is truncated
    only down to journal_size_limit, so its size stays at its high-water mark.
    """

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True, name="file-watcher")
        self.db = db
        self.wal: list[tuple[float, int, int]] = []  # (monotonic, frames, file bytes)
        self.commits: list[
            tuple[float, int]
        ] = []  # (monotonic when seen, commit_us_max of the second before)
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        from see_persistence import Reader

        reader = Reader(self.db)
        wal = Path(f"{self.db}-wal")
        names = ("writer.epoch", "writer.published_at_us", "writer.commit_us_max")
        last: tuple[Any, Any] | None = None
        n = 0
        try:
            while not self._stop_event.wait(SAMPLE_INTERVAL_S):
                now = time.monotonic()
                length = wal_index.read(self.db)
                try:
                    size = wal.stat().st_size
                except FileNotFoundError:
                    size = 0
                self.wal.append((now, length.frames if length is not None else 0, size))
                n += 1
                if n % COUNTER_POLL_EVERY:
                    continue
                try:
                    values = dict(
                        reader.query("SELECT name, value FROM counters WHERE name IN (?, ?, ?)", names)
                    )
                except (FileNotFoundError, sqlite3.Error, ValueError) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    continue
                key = (values.get("writer.epoch"), values.get("writer.published_at_us"))
                if key != last and "writer.commit_us_max" in values:
                    last = key
                    self.commits.append((now, int(values["writer.commit_us_max"])))
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=5)

    def wal_peak(self, t0: float, t1: float) -> tuple[int | None, int | None]:
        """The WAL's longest length (frames) and the -wal file's largest size between two monotonic times."""
        inside = [(frames, size) for at, frames, size in self.wal if t0 <= at <= t1]
        return max((f for f, _ in inside), default=None), max((b for _, b in inside), default=None)

    def commit_max(self, t0: float, t1: float) -> int | None:
        """The longest batch commit (µs) of the writer's publications that cover t0 to t1.

        The writer publishes about once a second what the second before held, so a publication
        seen within a second after t0 still covers some time before it: left out.
        """
        return max((us for at, us in self.commits if t0 + 1.0 <= at <= t1 + 1.3), default=None)


def _flush_group(group: Children, notes: list[str], after: str) -> None:
    flushed = group.broadcast(
        lambda _i: {"cmd": "flush", "timeout": FLUSH_TIMEOUT_S}, time.monotonic() + FLUSH_TIMEOUT_S + 30
    )
    if not all(a["flushed"] for a in flushed):
        notes.append(f"a flush after {after} timed out")


def _start_other_program(
    db: Path, log_path: Path, out: IO[bytes], warm: float, stop: float
) -> subprocess.Popen[bytes]:
    """tools/other_writer.py, writing from `warm` to `stop` (monotonic)."""
    return subprocess.Popen(
        [
            sys.executable,
            str(OTHER_WRITER),
            "--db",
            str(db),
            "--log",
            str(log_path),
            "--interval",
            str(OTHER_INTERVAL_S),
            "--busy-timeout",
            str(OTHER_BUSY_TIMEOUT_S),
            "--start-at",
            f"{warm:.6f}",
            "--stop-at",
            f"{stop:.6f}",
        ],
        stdout=out,
        stderr=out,
    )


def _check_other_rows(section: OtherWriter, db: Path, writes: list[other_tool.Write]) -> None:
    """Every row the other program wrote is in the file once, and no row of no instance besides."""
    asked = {w.id for w in writes if w.ok}
    conn = _open_raw_read_only(db)
    try:
        # Its rows have no instance (the seed's index on instance_id finds them); the GUIs' all have one.
        rows = [r[0] for r in conn.execute("SELECT id FROM workflow_executions WHERE instance_id IS NULL")]
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    finally:
        conn.close()
    lost, extra = len(asked - set(rows)), len(set(rows) - asked)
    if lost or extra:
        section.rows_checked = (
            f"**{lost} of its {len(asked)} rows missing, {extra} rows of no instance besides**"
        )
    else:
        section.rows_checked = (
            f"all {len(asked)} rows it wrote are there, once, and no others without an instance"
        )
    if dead:
        section.notes.append(f"{dead} dead letters")


def run_other_writer(settings: Settings) -> OtherWriter:
    """OTHER_P GUIs flood one writer on one file: without the other program, with it, without it again."""
    from see_persistence.writer.checkpointer import WAL_RESTART_PAGES

    section = OtherWriter()
    cell_dir = settings.workdir / "other-writer"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    other_log = cell_dir / "other-writes.tsv"
    writer = WriterProcess(db, cell_dir / "writer.log")
    watcher = FileWatcher(db)
    group = Children()
    other: subprocess.Popen[bytes] | None = None

    def phase(name: str, seconds: float, start_at: float | None = None) -> None:
        begun = time.monotonic()
        result, (warm, stop) = run_gui_phase(
            group,
            cell_dir,
            name.replace(", ", "-"),
            "flood",
            seconds,
            settings.warmup,
            cap=FLOOD_BACKLOG_CAP,
            start_at=start_at,
        )
        section.phases[name] = result
        section.commit_max_us[name] = watcher.commit_max(warm, stop)
        if name == "with" and other is not None:
            try:
                other.wait(timeout=OTHER_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                section.notes.append("the other program did not stop with the phase; killed")
        _flush_group(group, section.notes, f"the phase {name!r}")
        section.wal_peak[name], section.wal_file_peak[name] = watcher.wal_peak(begun, time.monotonic())

    try:
        writer.wait_ready()
        watcher.start()
        _start_guis(group, cell_dir, "ours", db, OTHER_WORKLOAD, OTHER_P)
        phase("without, before", settings.seconds)
        # The other program writes only in the middle phase's measured window, after its warm-up.
        start = time.monotonic() + OTHER_START_LEAD_S
        warm, stop = start + settings.warmup, start + settings.warmup + settings.other_seconds
        with open(cell_dir / "other-program.log", "wb") as out:
            other = _start_other_program(db, other_log, out, warm, stop)
        phase("with", settings.other_seconds, start_at=start)
        phase("without, after", settings.seconds)
        writes = other_tool.read_log(other_log)
        section.writes = len(writes)
        section.waits = Latency.of([w.wait_ns for w in writes])
        failed = [w for w in writes if not w.ok]
        section.errors = len(failed)
        section.first_errors = [f"at {w.at - warm:.1f} s: {w.error[:200]}" for w in failed[:3]]
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
        section.writer_exit = writer.stop()
        _check_other_rows(section, db, writes)
        if watcher.error:
            section.notes.append(f"the writer's counters could not always be read: {watcher.error}")
    finally:
        group.close()
        watcher.stop()
        if other is not None and other.poll() is None:
            other.kill()
            other.wait(timeout=10)
        writer.kill()
    conn = _open_raw_read_only(db)
    try:
        section.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    section.wal_bound_pages = WAL_RESTART_PAGES
    remove_db(db)
    return section


# ================================================================================================
# Live views: the change feed's delivery, its cost to the writer, a stopped subscriber
# ================================================================================================


@dataclass
class FeedSection:
    """The change feed beside FEED_P GUIs and one writer on one file (issue 14's numbers)."""

    procs: int = FEED_P
    workload: str = FEED_WORKLOAD
    # Flooding with 0, 1, 8 watcher processes and 0 again; then one watcher reading, stopped, reading.
    phases: dict[str, Phase] = field(default_factory=dict)
    watchers: dict[str, int] = field(default_factory=dict)  # per phase: watcher processes subscribed
    notices_per_watcher: dict[str, float | None] = field(default_factory=dict)
    writer_cpu: dict[str, float | None] = field(default_factory=dict)
    writer_rss_peak: dict[str, int | None] = field(default_factory=dict)
    # Each GUI at FEED_LIGHT_FRACTION of the peak (the mean of the two 0-watcher floods).
    light: Phase | None = None
    peak_rate: float | None = None
    machine_busy_light: float | None = None
    stamp_to_delivered: Latency | None = None  # the writer's stamp before its batch -> handed over
    send_to_delivered: Latency | None = None  # the Client's call -> handed over
    send_to_visible: Latency | None = None  # the Client's call -> a Reader polling every 1 ms saw it
    light_changes: int = 0
    light_resyncs: dict[str, int] = field(default_factory=dict)
    # The watcher stopped with SIGSTOP while the GUIs flood.
    stop_s: float | None = None
    watcher_rss_before: int | None = None
    watcher_rss_peak: int | None = None
    watcher_rss_after: int | None = None
    queue_bound_bytes: int | None = None
    commits_during_stop: int | None = None
    notices_after_stop: int | None = None  # notices it received for the commits since SIGSTOP
    resume_resyncs: dict[str, int] = field(default_factory=dict)
    resumed_in_s: float | None = None  # from SIGCONT until its backlog was drained
    # No writer: a change by plain sqlite3 -> the watcher's Resync.
    no_writer: list[int] = field(default_factory=list)  # ns
    poll_interval_s: float = 0.0
    silence_s: float = 0.0
    writer_exit: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _start_watchers(group: Children, cell_dir: Path, db: Path, count: int, first: int) -> None:
    """`count` watcher processes, each ready once a notice reached it."""
    for i in range(first, first + count):
        group.start(["--role", "watcher", "--db", str(db)], cell_dir / f"watcher-{i}.log")
    deadline = time.monotonic() + READY_TIMEOUT_S + 5 * count
    for child in group.members[-count:]:
        child.recv(deadline)


def _watcher_stats(group: Children) -> list[dict[str, Any]]:
    return group.broadcast(lambda _i: {"cmd": "stats"}, time.monotonic() + 30)


def _finish_watchers(group: Children) -> None:
    group.broadcast(lambda _i: {"cmd": "finish"}, time.monotonic() + 30)
    for child in group.members:
        child.wait_exit(10)
    group.close()
    group.members.clear()


def _commit_seq(db: Path) -> int:
    conn = _open_raw_read_only(db)
    try:
        row = conn.execute("SELECT commit_seq FROM writer_lease WHERE id = 1").fetchone()
    finally:
        conn.close()
    return int(row[0] or 0) if row else 0


def _caught_up(watchers: Children, mark: dict[str, Any], mark_seq: int, db: Path) -> bool:
    """The watcher took a notice for every commit since `mark` (or reported a gap) and holds none."""
    s = _watcher_stats(watchers)[0]
    if s["pending"]:
        return False
    if any(s["by_cause"].get(c, 0) > mark["by_cause"].get(c, 0) for c in ("missed", "overflow")):
        return True
    return bool(s["notices"] - mark["notices"] >= _commit_seq(db) - mark_seq)


def _stamps(db: Path, table: str, column: str, ids: Sequence[str]) -> dict[str, int]:
    """Wall µs of `column` for each id of `table`, read back after the phase."""
    found: dict[str, int] = {}
    conn = _open_raw_read_only(db)
    try:
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            marks = ",".join("?" * len(chunk))
            for record_id, text in conn.execute(
                f"SELECT id, {column} FROM {table} WHERE id IN ({marks})", chunk
            ):
                if text is not None:
                    found[record_id] = _parse_timestamp_us(text)
    finally:
        conn.close()
    return found


def _delivery_latencies(
    section: FeedSection, db: Path, deliveries: list[list[Any]], window: tuple[float, float]
) -> None:
    """Writer's stamp -> delivered, and send -> delivered, for the records stamped in the window.

    A task's or workflow's completion is its last change in the mix, so its `last_updated` is
    the writer's stamp of the very commit whose change the watcher handed over.
    """
    lo, hi = _wall_us(window[0]), _wall_us(window[1])
    completed: dict[str, tuple[str, int]] = {}
    events: dict[str, int] = {}
    for at_ns, kind, record_id, status in deliveries:
        if kind == "resync":
            section.light_resyncs[record_id] = section.light_resyncs.get(record_id, 0) + 1
            continue
        section.light_changes += 1
        if kind in ("workflow", "task") and status == "completed":
            completed[record_id] = (kind, at_ns)
        elif kind == "audit_event":
            events[record_id] = at_ns
    stamped: list[int] = []
    for kind, table in (("workflow", "workflow_executions"), ("task", "task_executions")):
        ids = [i for i, (k, _) in completed.items() if k == kind]
        for record_id, stamp_us in _stamps(db, table, "last_updated", ids).items():
            if lo <= stamp_us <= hi:
                stamped.append(completed[record_id][1] - stamp_us * 1000)
    sent: list[int] = []
    for record_id, call_us in _stamps(db, "audit_events", "timestamp", list(events)).items():
        if lo <= call_us <= hi:
            sent.append(events[record_id] - call_us * 1000)
    section.stamp_to_delivered = Latency.of(stamped)
    section.send_to_delivered = Latency.of(sent)


def _queue_bound_bytes() -> int:
    """What a stopped watcher may hold: its SUB queue full of the largest notices, and max_pending items.

    The largest notice lists MAX_RECORDS records with ids as long as ours; an item is counted at
    FEED_ITEM_BYTES (a Change and its strings in CPython take about half of that).
    """
    from see_persistence.idgen import new_id
    from see_persistence.protocol import feed
    from see_persistence.reader import watch

    records = tuple(
        feed.Record(feed.Kind.TASK, new_id(), new_id(), "completed") for _ in range(feed.MAX_RECORDS)
    )
    frames = feed.encode_notice(feed.FeedNotice(1, 1, 1, feed.Flag.NONE, records))
    notice_bytes = sum(len(frame) for frame in frames)
    return watch.RECEIVE_HIGH_WATER_MARK * notice_bytes + watch.MAX_PENDING * FEED_ITEM_BYTES


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _rss(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _plain_sqlite_change(db: Path) -> int:
    """One audit event inserted by plain sqlite3 (no writer runs); wall ns once its COMMIT returned."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=OTHER_BUSY_TIMEOUT_S)
    try:
        conn.execute(
            "INSERT INTO audit_events (id, event_type, message, timestamp, data) VALUES (?, ?, ?, ?, '{}')",
            (_uuid4_text(), "bench_plain_sqlite", "a change with no writer running", _now_text()),
        )
        return time.time_ns()
    finally:
        conn.close()


def _no_writer_delays(section: FeedSection, db: Path, watcher: Child, changes: int) -> None:
    """With the writer stopped: a change by plain sqlite3 -> the watcher's Resync(OTHER_WRITER)."""
    from see_persistence.reader import watch

    section.poll_interval_s = watch.POLL_INTERVAL_S
    section.silence_s = watch.NOTICE_SILENCE_S

    def stats() -> dict[str, Any]:
        watcher.send({"cmd": "stats"})
        return watcher.recv(time.monotonic() + 30)

    # Polling, and quiet: what the stopping writer left in the file has been reported already.
    settle = 3 * watch.POLL_INTERVAL_S
    seen: list[tuple[float, int]] = []

    def settled() -> bool:
        s = stats()
        seen.append((time.monotonic(), s["delivered"]))
        if not s["polling"]:
            return False
        changed = [at for (at, n), (_, m) in itertools.pairwise(seen) if n != m]
        return seen[-1][0] - max(changed, default=seen[0][0]) >= settle

    _wait_for(settled, watch.NOTICE_SILENCE_S + 20 * settle, "the watcher did not poll a quiet file")
    for _ in range(changes):
        before = stats()["by_cause"].get("other_writer", 0)

        def resynced(before: int = before) -> bool:
            return bool(stats()["by_cause"].get("other_writer", 0) > before)

        committed_ns = _plain_sqlite_change(db)
        _wait_for(
            resynced,
            watch.POLL_INTERVAL_S * 20 + 5,
            "no Resync(OTHER_WRITER) for a change made with no writer running",
        )
        section.no_writer.append(stats()["last_resync_ns"]["other_writer"] - committed_ns)


def run_feed(settings: Settings) -> FeedSection:
    """FEED_P GUIs and one writer on one file, watcher processes subscribed to its change feed.

    In order: flooding with 0, 1 and 8 watchers and with 0 again (the feed's cost); each GUI at
    FEED_LIGHT_FRACTION of that peak with one watcher (commit -> delivered); that watcher
    reading, stopped with SIGSTOP, reading again while the GUIs flood; then the writer stopped
    and changes made by plain sqlite3 (the polling fallback).
    """
    section = FeedSection()
    cell_dir = settings.workdir / "feed"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    writer = WriterProcess(db, cell_dir / "writer.log")
    sampler: Sampler | None = None
    group = Children()
    watchers = Children()
    extra = Children()
    started = 0

    def flood(
        name: str,
        seconds: float,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        assert sampler is not None
        before = _watcher_stats(watchers) + _watcher_stats(extra)
        if on_start is not None:
            on_start()
        try:
            result, (warm, stop) = run_gui_phase(
                group, cell_dir, name, "flood", seconds, settings.warmup, cap=FLOOD_BACKLOG_CAP
            )
        finally:
            if on_end is not None:
                on_end()
        after_flood = time.monotonic()
        section.phases[name] = result
        section.watchers[name] = len(before)
        section.writer_cpu[name] = sampler.cpu_fraction(warm, stop)
        section.writer_rss_peak[name] = max(
            (rss for at, _cpu, rss in sampler.samples if warm <= at <= after_flood), default=None
        )
        if on_start is None and before:
            after = _watcher_stats(watchers) + _watcher_stats(extra)
            got = [a["notices"] - b["notices"] for a, b in zip(after, before, strict=True)]
            section.notices_per_watcher[name] = sum(got) / len(got)
        _flush_group(group, section.notes, f"the phase {name!r}")

    try:
        writer.wait_ready()
        sampler = Sampler(writer.pid)
        sampler.start()
        _start_guis(group, cell_dir, "ours", db, FEED_WORKLOAD, FEED_P)

        # The feed's cost: the same flood with 0, 1 and 8 watcher processes subscribed.
        flood("0 watchers", settings.seconds)
        _start_watchers(watchers, cell_dir, db, 1, started)
        started += 1
        flood("1 watcher", settings.seconds)
        _start_watchers(extra, cell_dir, db, 7, started)
        started += 7
        flood("8 watchers", settings.seconds)
        _finish_watchers(extra)
        _finish_watchers(watchers)
        flood("0 watchers, again", settings.seconds)
        peaks = [section.phases[k].rate for k in ("0 watchers", "0 watchers, again")]
        section.peak_rate = sum(peaks) / len(peaks)

        # Commit -> delivered: each GUI at a fraction of that peak, one watcher taking every item.
        _start_watchers(watchers, cell_dir, db, 1, started)
        watcher = watchers.members[0]
        if section.peak_rate > 0:
            mark_stats, mark_seq = _watcher_stats(watchers)[0], _commit_seq(db)
            rate = section.peak_rate * FEED_LIGHT_FRACTION / FEED_P
            probe = VisibilityProbe(db)
            probe.start()
            try:
                section.light, window = run_gui_phase(
                    group, cell_dir, "light", "paced", settings.seconds, settings.warmup / 2, rate=rate
                )
            finally:
                probe.stop()
            probe_cell = Cell("ours", FEED_WORKLOAD, FEED_P)
            section.send_to_visible = probe.latency(*window, probe_cell)
            section.notes += probe_cell.notes
            section.machine_busy_light = sampler.machine_busy(*window)
            _flush_group(group, section.notes, "the paced phase")
            # Everything committed is announced by now, or the watcher says it missed it.
            _wait_for(lambda: _caught_up(watchers, mark_stats, mark_seq, db), 60, "the watcher's backlog")
            path = cell_dir / "light-deliveries.json"
            watcher.send({"cmd": "dump", "path": str(path), "start": mark_stats["delivered"]})
            watcher.recv(time.monotonic() + 60)
            _delivery_latencies(section, db, json.loads(path.read_text(encoding="utf-8")), window)
        else:
            section.notes.append(
                "no commit was confirmed inside the floods' windows, so the paced phase did not run"
            )

        # A subscriber that stops reading while the GUIs flood: reading, stopped, reading again.
        watcher_sampler = Sampler(watcher.proc.pid)
        watcher_sampler.start()
        stopped: dict[str, Any] = {}

        def stop_watcher() -> None:
            stopped["stats"] = _watcher_stats(watchers)[0]
            stopped["seq"] = _commit_seq(db)
            section.watcher_rss_before = _rss(watcher.proc.pid)
            stopped["at"] = time.monotonic()
            os.kill(watcher.proc.pid, signal.SIGSTOP)

        def resume_watcher() -> None:
            if "at" in stopped:
                os.kill(watcher.proc.pid, signal.SIGCONT)
                stopped["resumed"] = time.monotonic()

        flood("1 watcher reading", settings.seconds)
        flood("the watcher stopped", settings.feed_stop_seconds, stop_watcher, resume_watcher)
        section.stop_s = stopped["resumed"] - stopped["at"]
        before = stopped["stats"]["by_cause"]
        _wait_for(
            lambda: _caught_up(watchers, stopped["stats"], stopped["seq"], db),
            60,
            "the resumed watcher neither caught up nor reported a Resync",
        )
        section.resumed_in_s = time.monotonic() - stopped["resumed"]
        section.watcher_rss_after = _rss(watcher.proc.pid)
        now_stats = _watcher_stats(watchers)[0]
        section.commits_during_stop = _commit_seq(db) - stopped["seq"]
        section.notices_after_stop = now_stats["notices"] - stopped["stats"]["notices"]
        section.resume_resyncs = {
            cause: n - before.get(cause, 0)
            for cause, n in now_stats["by_cause"].items()
            if n > before.get(cause, 0)
        }
        watcher_sampler.stop()
        section.watcher_rss_peak = watcher_sampler.peak_rss()
        section.queue_bound_bytes = _queue_bound_bytes()
        flood("reading again", settings.seconds)

        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
        sampler.stop()
        section.writer_exit = writer.stop()

        # No writer: the watcher polls the file; a change by plain sqlite3 becomes a Resync.
        changes = FEED_QUICK_NO_WRITER_CHANGES if settings.quick else FEED_NO_WRITER_CHANGES
        _no_writer_delays(section, db, watcher, changes)
        _finish_watchers(watchers)
    finally:
        group.close()
        watchers.close()
        extra.close()
        if sampler is not None:
            sampler.stop()
        writer.kill()
    remove_db(db)
    return section


# ================================================================================================
# The read benchmark
# ================================================================================================

_WF_COLS = (
    "id, workflow_name, status, created_at, started_at, completed_at, success, error_message,"
    " metadata, instance_id, last_updated"
)
_TASK_COLS = (
    "id, workflow_id, task_name, status, created_at, started_at, completed_at, success,"
    " error_message, output, logs, retry_count, execution_order, instance_id, last_updated"
)
_AUDIT_COLS = "id, workflow_id, task_id, event_type, message, timestamp, data, instance_id"


def _read_status(i: int) -> str:
    if i % 20 == 3:
        return "failed"
    if i % 50 == 7:
        return "running"
    if i % 100 == 11:
        return "cancelled"
    return "completed"


def _upgrade_read_db(db: Path) -> None:
    """Bring the read database (new or cached) to this checkout's schema, as the writer does.

    A cached file built before a schema change (e.g. without version 4's list-view indexes)
    would time plans that our writer no longer leaves in a file.
    """
    from see_persistence.protocol import schema
    from see_persistence.writer.storage import upgrade_schema

    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        found = upgrade_schema(conn, time.time_ns() // 1000)
        if 0 < found < schema.SCHEMA_VERSION:
            log.info("upgraded the read database %s from schema version %d", db, found)
        # A cached file has statistics (a fresh one gets them once filled): give every index
        # the upgrade added its own, as a fresh build has them.
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            analyzed = {row[0] for row in conn.execute("SELECT DISTINCT idx FROM sqlite_stat1")}
            for index in schema.LAYER_INDEXES.keys() - analyzed:
                conn.execute(f"ANALYZE {index}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def build_read_db(db: Path, workflows: int) -> tuple[int, int, int]:
    """Build the read database fast: executemany in big transactions; returns the row counts."""
    from see_persistence.protocol.ids import format_uuid7
    from see_persistence.protocol.timestamps import format_us

    db.parent.mkdir(parents=True, exist_ok=True)
    _upgrade_read_db(db)  # the writer's own schema (tables, indexes, added columns), in WAL
    rng = random.Random(7)
    instances = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(READ_INSTANCES)]
    base_us = (time.time_ns() // 1000) - workflows * 60_000_000  # one workflow a minute, up to now
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    tasks = events = 0
    chunk = 20_000
    try:
        for first in range(0, workflows, chunk):
            wf_rows, task_rows, event_rows = [], [], []
            for i in range(first, min(workflows, first + chunk)):
                created = base_us + i * 60_000_000
                status = _read_status(i)
                done = status in ("completed", "failed", "cancelled")
                wid = format_uuid7(created // 1000, 0, rng.getrandbits(62))
                instance = instances[i % READ_INSTANCES]
                created_s, started_s = format_us(created), format_us(created + 1_000_000)
                ended_s = format_us(created + 50_000_000) if done else None
                success = None if not done or status == "cancelled" else int(status == "completed")
                wf_rows.append(
                    (
                        wid,
                        f"workflow-{i % 37}",
                        status,
                        created_s,
                        started_s,
                        ended_s,
                        success,
                        "tests failed" if status == "failed" else None,
                        _json_text({"branch": "main", "n": i}),
                        instance,
                        ended_s or started_s,
                    )
                )
                if i % READ_CHILDREN_EVERY:
                    continue
                for order in range(1, 6):
                    t_created = created + order * 5_000_000
                    task_rows.append(
                        (
                            format_uuid7(t_created // 1000, order, rng.getrandbits(62)),
                            wid,
                            TASK_NAMES[order],
                            "completed",
                            format_us(t_created),
                            format_us(t_created + 100_000),
                            format_us(t_created + 4_000_000),
                            1,
                            None,
                            "ok",
                            '["step 1 of the task: ok","step 2 of the task: ok"]',
                            0,
                            order,
                            instance,
                            format_us(t_created + 4_000_000),
                        )
                    )
                for j in range(10):
                    e_at = created + 30_000_000 + j * 1000
                    event_rows.append(
                        (
                            format_uuid7(e_at // 1000, 16 + j, rng.getrandbits(62)),
                            wid,
                            None,
                            "workflow_step",
                            "a step of the workflow finished",
                            format_us(e_at),
                            _json_text({"j": j}),
                            instance,
                        )
                    )
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO workflow_executions ({_WF_COLS}) VALUES ({','.join('?' * 11)})", wf_rows
            )
            conn.executemany(
                f"INSERT INTO task_executions ({_TASK_COLS}) VALUES ({','.join('?' * 15)})", task_rows
            )
            conn.executemany(
                f"INSERT INTO audit_events ({_AUDIT_COLS}) VALUES ({','.join('?' * 8)})", event_rows
            )
            conn.execute("COMMIT")
            tasks += len(task_rows)
            events += len(event_rows)
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return workflows, tasks, events


def _read_db(settings: Settings) -> tuple[Path, Reads]:
    cache = settings.read_cache or settings.workdir
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"read-{settings.read_workflows}-v1.db"
    marker = db.with_suffix(".done")
    t0 = time.monotonic()
    if db.exists() and marker.exists():
        counts = json.loads(marker.read_text())
        log.info("reusing the read database %s", db)
        _upgrade_read_db(db)
    else:
        remove_db(db)
        log.info("building a read database of %d workflows at %s", settings.read_workflows, db)
        counts = list(build_read_db(db, settings.read_workflows))
        marker.write_text(json.dumps(counts))
    return db, Reads(counts[0], counts[1], counts[2], time.monotonic() - t0)


def _open_raw_read_only(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{quote(str(db))}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _time_pair(
    ours: Callable[[Any], Sequence[Any]],
    raw: Callable[[Any], Sequence[Any]],
    args: Sequence[Any],
    budget_s: float,
) -> tuple[float, float, float, int]:
    """Median ns per call of `ours` and `raw` over `args`, alternating; and rows per call."""
    pc = time.perf_counter_ns
    for arg in args[:3]:  # warm the page cache and the statement caches
        ours(arg)
        raw(arg)
    ours_ns: list[int] = []
    raw_ns: list[int] = []
    rows = 0
    deadline = time.monotonic() + budget_s
    calls = 0
    while True:
        for arg in args:
            first, second = (ours, raw) if calls % 2 == 0 else (raw, ours)
            t0 = pc()
            a = first(arg)
            t1 = pc()
            b = second(arg)
            t2 = pc()
            if first is ours:
                ours_ns.append(t1 - t0)
                raw_ns.append(t2 - t1)
            else:
                raw_ns.append(t1 - t0)
                ours_ns.append(t2 - t1)
            rows += len(a) if first is ours else len(b)
            calls += 1
            if time.monotonic() >= deadline and calls >= 5:
                ours_ns.sort()
                raw_ns.sort()
                return ours_ns[len(ours_ns) // 2], raw_ns[len(raw_ns) // 2], rows / calls, calls


def run_reads(settings: Settings) -> Reads:
    """Queries through Reader beside the same SQL through raw sqlite3, and rows/s materialized."""
    from see_persistence import Reader

    db, reads = _read_db(settings)
    reader = Reader(db)
    raw = _open_raw_read_only(db)
    rng = random.Random(11)

    def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
        cursor = raw.execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    try:
        total = reads.workflows
        some = [rng.randrange(1, total + 1) for _ in range(200)]
        ids = [fetch("SELECT id FROM workflow_executions WHERE rowid = ?", (r,))[0][0] for r in some]
        parents = (
            [
                fetch(
                    "SELECT workflow_id FROM task_executions WHERE rowid = ?",
                    (rng.randrange(1, reads.tasks + 1),),
                )[0][0]
                for _ in range(200)
            ]
            if reads.tasks
            else ids
        )
        instances = [r[0] for r in fetch("SELECT DISTINCT instance_id FROM workflow_executions LIMIT 50", ())]
        newest = (
            f"SELECT {_WF_COLS} FROM workflow_executions{{}}"
            " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        )
        # (name, Reader call, the same SQL through raw sqlite3, arguments, target per call)
        queries: list[
            tuple[
                str,
                Callable[[Any], Sequence[Any]],
                Callable[[Any], Sequence[Any]],
                Sequence[Any],
                float | None,
            ]
        ] = [
            (
                "get_workflow(id)",
                lambda a: [w] if (w := reader.get_workflow(a)) else [],
                lambda a: fetch(f"SELECT {_WF_COLS} FROM workflow_executions WHERE id = ?", (a,)),
                ids,
                None,
            ),
            (
                "list_workflows(limit=50)",
                lambda a: reader.list_workflows(limit=50),
                lambda a: fetch(newest.format(""), (50, 0)),
                [None],
                TARGET_LIST_CALL_NS,
            ),
            (
                "list_workflows(limit=50, status='failed')",
                lambda a: reader.list_workflows(limit=50, status="failed"),
                lambda a: fetch(newest.format(" WHERE status = ?"), ("failed", 50, 0)),
                [None],
                TARGET_LIST_CALL_NS,
            ),
            (
                "list_workflows(limit=50, instance_id=...)",
                lambda a: reader.list_workflows(limit=50, instance_id=a),
                lambda a: fetch(newest.format(" WHERE instance_id = ?"), (a, 50, 0)),
                instances,
                TARGET_LIST_CALL_NS,
            ),
            (
                # Served by the instance's index, newest first, filtered by status: an instance
                # without a failed workflow (19 of the 20 here) reads every row it has.
                "list_workflows(limit=50, status='failed', instance_id=...)",
                lambda a: reader.list_workflows(limit=50, status="failed", instance_id=a),
                lambda a: fetch(newest.format(" WHERE status = ? AND instance_id = ?"), ("failed", a, 50, 0)),
                instances,
                TARGET_LIST_CALL_NS,
            ),
            (
                "get_workflows_for_instance(id), its default limit=100",
                reader.get_workflows_for_instance,
                lambda a: fetch(newest.format(" WHERE instance_id = ?"), (a, 100, 0)),
                instances,
                2 * TARGET_LIST_CALL_NS,  # 100 rows: twice the time of 50
            ),
            (
                "get_tasks_for_workflow(id)",
                reader.get_tasks_for_workflow,
                lambda a: fetch(
                    f"SELECT {_TASK_COLS} FROM task_executions WHERE workflow_id = ?"
                    " ORDER BY execution_order, created_at, id",
                    (a,),
                ),
                parents,
                None,
            ),
            (
                "get_audit_trail(id)",
                reader.get_audit_trail,
                lambda a: fetch(
                    f"SELECT {_AUDIT_COLS} FROM audit_events WHERE workflow_id = ? ORDER BY timestamp, id",
                    (a,),
                ),
                parents,
                None,
            ),
        ]
        for name, ours_fn, raw_fn, args, limit_ns in queries:
            ours_ns, raw_ns, rows, calls = _time_pair(ours_fn, raw_fn, args, settings.read_budget_s)
            reads.figures.append(ReadFigure(name, rows, ours_ns, raw_ns, calls, limit_ns))
            log.info("read %s: %.1f µs vs %.1f µs raw", name, ours_ns / 1000, raw_ns / 1000)
        limit = min(settings.materialize_rows, total)
        offsets = [0] * 5  # the newest rows: no OFFSET to skip through
        ours_ns, raw_ns, rows, _calls = _time_pair(
            lambda a: reader.list_workflows(limit=limit, offset=a),
            lambda a: fetch(newest.format(""), (limit, a)),
            offsets,
            settings.read_budget_s,
        )
        reads.materialize.append(
            (f"list_workflows(limit={limit})", rows / ours_ns * 1e9, rows / raw_ns * 1e9)
        )
        trail_ours, trail_raw, trail_rows, _ = _time_pair(
            reader.get_audit_trail,
            lambda a: fetch(
                f"SELECT {_AUDIT_COLS} FROM audit_events WHERE workflow_id = ? ORDER BY timestamp, id", (a,)
            ),
            parents,
            settings.read_budget_s / 2,
        )
        reads.materialize.append(
            ("get_audit_trail(id)", trail_rows / trail_ours * 1e9, trail_rows / trail_raw * 1e9)
        )
    finally:
        reader.close()
        raw.close()
    return reads


# ================================================================================================
# Report
# ================================================================================================


def fmt_ns(ns: float | None) -> str:
    """A duration with a readable unit."""
    if ns is None:
        return "n/a"
    if ns < 1_000_000:
        return f"{ns / 1000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def fmt_rate(rate: float | None) -> str:
    """Operations per second with thousands separators."""
    return "n/a" if rate is None else f"{rate:,.0f}"


def fmt_ratio(value: float | None, baseline: float | None) -> str:
    """value ÷ baseline as '1.23x' (with the multiplication sign)."""
    if value is None or baseline is None or baseline == 0:
        return "n/a"
    ratio = value / baseline
    return f"{ratio:.3f}{TIMES}" if ratio < 0.1 else f"{ratio:.2f}{TIMES}"


def fmt_mb(value: float | None) -> str:
    """Bytes as MB."""
    return "n/a" if value is None else f"{value / 1024 / 1024:.1f} MB"


def fmt_bytes(value: float | None) -> str:
    """Bytes with no decimals."""
    return "n/a" if value is None else f"{value:,.0f} B"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def fmt_cpu(value: float | None) -> str:
    """CPU µs per operation."""
    return "n/a" if value is None else f"{value:.1f} µs"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _phase(cell: Cell | None, name: str) -> Phase | None:
    return getattr(cell, name) if cell is not None else None


def _lat(cell: Cell | None, name: str) -> Latency | None:
    phase = _phase(cell, name)
    return phase.latency if phase is not None else None


def _rate(cell: Cell | None, name: str = "flood") -> float | None:
    phase = _phase(cell, name)
    return phase.rate if phase is not None else None


def _latency_rows(results: Results, workload: str, phase: str, baseline_phase: str | None) -> list[list[str]]:
    rows: list[list[str]] = []
    for p in results.settings.procs:
        base = results.cells.get((workload, "naive-same", p))
        ours = results.cells.get((workload, "ours", p))
        base_lat = _lat(base, baseline_phase) if baseline_phase else None
        ours_lat = _lat(ours, phase)
        if baseline_phase:
            rate = _phase(base, baseline_phase)
            rows.append(
                [
                    str(p),
                    SYSTEM_TITLES["naive-same"],
                    fmt_rate(rate.per_gui_rate) if rate and rate.per_gui_rate else "flat out",
                    *(
                        fmt_ns(getattr(base_lat, k)) if base_lat else "n/a"
                        for k in ("p50", "p99", "p999", "max")
                    ),
                    str(base_lat.n) if base_lat else "0",
                ]
            )
        rate = _phase(ours, phase)
        cells = []
        for k in ("p50", "p99", "p999", "max"):
            value = getattr(ours_lat, k) if ours_lat else None
            text = fmt_ns(value)
            if base_lat is not None and value is not None:
                text += f" ({fmt_ratio(value, getattr(base_lat, k))})"
            cells.append(text)
        extra = f", {rate.dropped} dropped" if rate and rate.dropped else ""
        rows.append(
            [
                str(p),
                SYSTEM_TITLES["ours"],
                fmt_rate(rate.per_gui_rate) if rate and rate.per_gui_rate else "flat out",
                *cells,
                (str(ours_lat.n) if ours_lat else "0") + extra,
            ]
        )
    return rows


def _dumps_text(count: int) -> str:
    return "one `json.dumps`" if count == 1 else f"{count} `json.dumps`"


def _control_section(results: Results, workload: str, phase_name: str) -> list[str]:
    """The trivial call timed inside the same loops as the write calls, beside them."""
    rows = []
    for p in results.settings.procs:
        for system in ("naive-same", "ours"):
            phase = _phase(results.cells.get((workload, system, p)), phase_name)
            if phase is None or phase.control is None or phase.latency is None:
                continue
            c, w = phase.control, phase.latency
            rows.append(
                [
                    str(p),
                    SYSTEM_TITLES[system],
                    fmt_ns(c.p50),
                    fmt_ns(c.p99),
                    fmt_ns(c.p999),
                    fmt_ns(w.p50),
                    fmt_ns(w.p99),
                    fmt_ratio(w.p99, c.p99),
                    str(c.n),
                ]
            )
    if not rows:
        return []
    when = (
        f"every {CONTROL_EVERY}th turn of each flooding GUI's loop also times"
        if phase_name == "flood"
        else f"every {CONTROL_EVERY}th wakeup of each paced GUI first times"
    )
    out = [
        f"The machine's own tail, in the same loops: {when} {_dumps_text(CONTROL_DUMPS)} of a small"
        " dict as one call (no I/O, no lock), in the same processes at the same moments as the write"
        " calls above."
        + (
            " The write calls of those wakeups, on caches the trivial call warmed, are left out of the"
            " write call's figures."
            if phase_name == "paced"
            else ""
        ),
        "",
    ]
    return out + _table(
        [
            "P",
            "system",
            "trivial call p50",
            "trivial p99",
            "trivial p99.9",
            "write call p50",
            "write call p99",
            "write p99 ÷ trivial p99",
            "trivial calls",
        ],
        rows,
    )


def _workload_section(results: Results, workload: str) -> list[str]:
    procs = results.settings.procs
    ceiling = results.ceilings.get(workload)
    ceiling_rate = _rate(ceiling)
    unit = "event" if workload == "audit" else "workflow"
    out = [f"## Writes: {WORKLOAD_TITLES[workload]}", ""]

    out += ["### Committed rows/s", ""]
    if workload == "mix":
        out += ["Rows written per second: each operation inserts or updates one row (38 a workflow).", ""]
    rows = []
    for p in procs:
        same = _rate(results.cells.get((workload, "naive-same", p)))
        rnd = _rate(results.cells.get((workload, "naive-uuid4", p)))
        ours = _rate(results.cells.get((workload, "ours", p)))
        rows.append(
            [
                str(p),
                fmt_rate(same),
                fmt_rate(rnd),
                fmt_rate(ours),
                fmt_rate(ceiling_rate),
                fmt_ratio(ours, same),
                fmt_ratio(ours, rnd),
                fmt_ratio(ours, ceiling_rate),
            ]
        )
    out += _table(
        [
            "P",
            "naive, same ids",
            "naive, uuid4 ids",
            "see-persistence",
            "ceiling (1 process)",
            "ours ÷ naive same",
            "ours ÷ naive uuid4",
            "ours ÷ ceiling",
        ],
        rows,
    )

    header = ["P", "system", "rate per GUI (ops/s)", "p50", "p99", "p99.9", "max", "calls"]
    out += ["### Write call latency, flooding", ""]
    out += [
        "The GUI's write call: the INSERT/UPDATE for naive, the Client call for us; ratio to naive in ().",
        "",
    ]
    out += _table(header, _latency_rows(results, workload, "flood", "flood"))
    out += _control_section(results, workload, "flood")
    out += ["### Write call latency, each GUI at a steady half of the peak rate", ""]
    out += [
        "Each system at half of its own peak (its committed rows/s at that P, split over the P GUIs).",
        "",
    ]
    out += _table(header, _latency_rows(results, workload, "paced", "paced"))
    out += _control_section(results, workload, "paced")
    out += ["### Write call latency, writer absent (flooding)", ""]
    out += [
        f"The writer stopped; each GUI keeps calling until {results.settings.absent_cap:,} operations wait"
        " in its outbox. Baseline: naive flooding.",
        "",
    ]
    out += _table(header, _latency_rows(results, workload, "absent", "flood"))

    out += ["### Send → visible, at half the peak rate", ""]
    out += [
        "From the write call to a Reader (another process, polling every 1 ms) seeing the row;"
        " an upper bound. Cores busy: the whole machine's, at that rate (of"
        f" {os.cpu_count() or 1}). Ours once more with each GUI at {LIGHT_FRACTION:g} of the peak"
        " rate: the same path with cores to spare.",
        "",
    ]
    rows = []
    for p in procs:
        base_cell = results.cells.get((workload, "naive-same", p))
        ours_cell = results.cells.get((workload, "ours", p))
        bv = base_cell.visible if base_cell else None
        ov = ours_cell.visible if ours_cell else None
        lv = ours_cell.visible_light if ours_cell else None
        rows.append(
            [
                str(p),
                fmt_ns(bv.p50 if bv else None),
                fmt_ns(bv.p99 if bv else None),
                fmt_ns(ov.p50 if ov else None),
                fmt_ns(ov.p99 if ov else None),
                fmt_ratio(ov.p99 if ov else None, bv.p99 if bv else None),
                str(ov.n if ov else 0),
                _num(ours_cell.machine_busy_paced if ours_cell else None, 2),
                fmt_ns(lv.p50 if lv else None),
                fmt_ns(lv.p99 if lv else None),
                _num(ours_cell.machine_busy_light if ours_cell else None, 2),
            ]
        )
    quarter = f"{LIGHT_FRACTION:g} of the peak"
    out += _table(
        [
            "P",
            "naive p50",
            "naive p99",
            "see-persistence p50",
            "see-persistence p99",
            "p99 ratio",
            "rows seen",
            "cores busy",
            f"ours p50 at {quarter}",
            f"ours p99 at {quarter}",
            f"cores busy at {quarter}",
        ],
        rows,
    )

    out += ["### CPU and memory", ""]
    out += [
        "CPU µs per committed operation while flooding (GUIs: all GUI processes together).",
        "Writer RSS: psutil's peak sample (the kernel's VmHWM in ()), against the 60 MB target.",
        "",
    ]
    rows = []
    for p in procs:
        base = results.cells.get((workload, "naive-same", p))
        ours = results.cells.get((workload, "ours", p))
        naive_cpu = base.flood.gui_cpu_us_per_op if base and base.flood else None
        gui_cpu = ours.flood.gui_cpu_us_per_op if ours and ours.flood else None
        writer_cpu = ours.writer_cpu_us_per_op if ours else None
        total = gui_cpu + writer_cpu if gui_cpu is not None and writer_cpu is not None else None
        rss = ours.writer_rss if ours else None
        hwm = ours.writer_rss_hwm if ours else None
        rows.append(
            [
                str(p),
                fmt_cpu(naive_cpu),
                fmt_cpu(gui_cpu),
                fmt_cpu(writer_cpu),
                fmt_cpu(total),
                fmt_ratio(total, naive_cpu),
                "n/a" if not ours or ours.writer_cpu is None else f"{ours.writer_cpu:.2f}",
                f"{fmt_mb(rss)} ({fmt_mb(hwm)})",
                fmt_ratio(rss, TARGET_WRITER_RSS_BYTES),
            ]
        )
    out += _table(
        [
            "P",
            "naive GUIs",
            "our GUIs",
            "our writer",
            "ours total",
            "ours ÷ naive",
            "writer CPU s/s",
            "writer peak RSS",
            "÷ 60 MB",
        ],
        rows,
    )
    if ceiling and ceiling.flood:
        out += [f"Ceiling: {fmt_cpu(ceiling.flood.gui_cpu_us_per_op)} CPU per operation in one process.", ""]
    out += [
        "Flooding beside half the peak rate: operations per message the Client sent (naive: one per"
        " transaction), CPU µs per operation in our GUIs and our writer, the writer's CPU s/s, and"
        f" the cores busy on the whole machine ({os.cpu_count()} CPUs; GUIs, writer, Reader probe,"
        " kernel) at half the peak rate: a GUI paced by sleeps spends CPU on every wakeup.",
        "",
    ]
    rows = []
    for p in procs:
        ours = results.cells.get((workload, "ours", p))
        flood, paced = _phase(ours, "flood"), _phase(ours, "paced")
        paced_writer = (
            ours.writer_cpu_paced / paced.rate * 1e6
            if ours and paced and ours.writer_cpu_paced is not None and paced.rate
            else None
        )
        rows.append(
            [
                str(p),
                _num(flood.ops_per_message if flood else None),
                _num(paced.ops_per_message if paced else None),
                fmt_cpu(flood.gui_cpu_us_per_op if flood else None),
                fmt_cpu(paced.gui_cpu_us_per_op if paced else None),
                fmt_cpu(ours.writer_cpu_us_per_op if ours else None),
                fmt_cpu(paced_writer),
                _num(ours.writer_cpu if ours else None, 2),
                _num(ours.writer_cpu_paced if ours else None, 2),
                _num(ours.machine_busy_paced if ours else None, 2),
            ]
        )
    out += _table(
        [
            "P",
            "ops/message flood",
            "ops/message half peak",
            "GUI CPU/op flood",
            "GUI CPU/op half peak",
            "writer CPU/op flood",
            "writer CPU/op half peak",
            "writer CPU s/s flood",
            "writer CPU s/s half peak",
            "machine busy half peak",
        ],
        rows,
    )

    out += [f"### Disk: bytes per {unit}", ""]
    out += [
        "Pages in use after a checkpoint, divided by the number of "
        + ("audit events" if workload == "audit" else "workflows (with their tasks and events)")
        + ". Raw copy: the same rows inserted in order into a fresh file with the same schema.",
        "",
    ]
    rows = []
    for p in procs:
        ours = results.cells.get((workload, "ours", p))
        same = results.cells.get((workload, "naive-same", p))
        rnd = results.cells.get((workload, "naive-uuid4", p))
        o = ours.bytes_per_unit if ours else None
        r = ours.raw_bytes_per_unit if ours else None
        s = same.bytes_per_unit if same else None
        u = rnd.bytes_per_unit if rnd else None
        rows.append(
            [
                str(p),
                fmt_bytes(o),
                fmt_bytes(r),
                fmt_ratio(o, r),
                fmt_bytes(s),
                fmt_ratio(o, s),
                fmt_bytes(u),
                fmt_ratio(o, u),
            ]
        )
    out += _table(
        [
            "P",
            "see-persistence",
            "raw copy",
            "ours ÷ raw",
            "naive, same ids",
            "ours ÷ naive",
            "naive, uuid4 ids",
            "ours ÷ uuid4",
        ],
        rows,
    )
    if ceiling is not None:
        out += [f"Ceiling file: {fmt_bytes(ceiling.bytes_per_unit)} per {unit}.", ""]
    return out


OTHER_HEADER = f"## Another program writing beside {OTHER_P} flooding GUIs"


def _pages(pages: int | None, page_size: int | None) -> str:
    """Pages, and the MB of their contents."""
    if pages is None:
        return "n/a"
    return f"{pages:,} pages" + (f" ({fmt_mb(pages * page_size)})" if page_size else "")


def _other_writer_section(results: Results) -> list[str]:
    """The GUIs' rows/s without, with and without the other program; its write waits; the WAL."""
    section = results.other_writer
    out = [OTHER_HEADER, ""]
    if section is None:
        return [*out, "not measured", ""]
    s = results.settings
    out += [
        f"{section.procs} GUI processes flood one writer ({WORKLOAD_TITLES[section.workload]}; each pauses"
        f" while {FLOOD_BACKLOG_CAP:,} of its operations wait, as above) on one fresh file, three times in"
        " a row: without another program, with it, and without it again. The other program"
        " (`tools/other_writer.py`) is what the app's Rust core or a user's script would be: plain"
        f" `sqlite3.connect(db, timeout={OTHER_BUSY_TIMEOUT_S:g})` in autocommit, inserting one workflow"
        f" every {section.interval_s * 1000:g} ms with the seed's column values, during the middle phase's"
        f" {s.other_seconds:g} s window (after {s.warmup:g} s of warm-up). Its wait is the time from its"
        " call to its return. It keeps a fixed schedule: a write that returns late is followed by the"
        " next at once and the slots it missed are skipped, so fewer writes than the window has slots"
        " means they waited.",
        "",
    ]
    if section.error:
        out += [f"**failed:** {section.error}", ""]
    rates = {name: phase.rate for name, phase in section.phases.items()}
    without = [rates[k] for k in ("without, before", "without, after") if rates.get(k)]
    baseline = sum(without) / len(without) if without else None
    out += ["### The GUIs' committed rows/s", ""]
    rows = []
    for name, title in (
        ("without, before", "without the other program"),
        ("with", "with the other program writing"),
        ("without, after", "without it, again"),
    ):
        phase = section.phases.get(name)
        commit_us = section.commit_max_us.get(name)
        rows.append(
            [
                title,
                f"{phase.window_s:.1f} s" if phase else "n/a",
                fmt_rate(phase.rate if phase else None),
                fmt_ratio(phase.rate if phase else None, baseline),
                _pages(section.wal_peak.get(name), section.page_size),
                fmt_mb(section.wal_file_peak.get(name)),
                fmt_ns(None if commit_us is None else commit_us * 1000),
            ]
        )
    out += _table(
        [
            "phase",
            "window",
            "committed rows/s",
            "÷ without (mean of both)",
            "WAL peak",
            "-wal file peak",
            "writer's longest batch commit",
        ],
        rows,
    )
    same = _rate(results.cells.get((section.workload, "ours", section.procs)))
    if same is not None:
        out += [
            f"The {section.workload} table's see-persistence flood at P={section.procs} (its own writer and"
            f" file, in this run): {fmt_rate(same)} rows/s; this section's without-phases ÷ it:"
            f" {fmt_ratio(baseline, same)}.",
            "",
        ]
    out += [
        "WAL peak: the WAL's longest length, in pages (frames), read from the wal-index header in"
        " `-shm` every 50 ms from the phase's start to the end of its flush; the `-wal` file itself keeps"
        " its largest size until a checkpoint truncates it to `journal_size_limit`. The writer's longest"
        " batch commit: the largest `writer.commit_us_max` it published during the phase (BEGIN"
        " IMMEDIATE to COMMIT, the wait for the write lock included).",
        "",
    ]
    out += ["### The other program's writes", ""]
    w = section.waits
    out += _table(
        ["writes", "errors", "p50", "p99", "p99.9", "max", "target p99", "target max"],
        [
            [
                str(section.writes),
                str(section.errors),
                *(fmt_ns(getattr(w, k) if w else None) for k in ("p50", "p99", "p999", "max")),
                f"≤ {fmt_ns(TARGET_OTHER_WAIT_P99_NS)}",
                f"≤ {fmt_ns(TARGET_OTHER_WAIT_MAX_NS)}",
            ]
        ],
    )
    out += [f"- error: {text}" for text in section.first_errors]
    if section.wal_bound_pages is not None:
        peak = section.wal_peak.get("with")
        out += [
            f"- The WAL's bound: `WAL_RESTART_PAGES` of `writer/checkpointer.py`,"
            f" {_pages(section.wal_bound_pages, section.page_size)} at this file's page size"
            f" ({section.page_size} B): where the writer's own checkpoint starts the WAL over. The WAL"
            " passes it by the transaction that crosses it, and by more while a reader or another writer"
            " keeps that checkpoint from finishing. Peak with the other program:"
            f" {_pages(peak, section.page_size)} ({fmt_ratio(peak, section.wal_bound_pages)} of the bound).",
        ]
    if section.rows_checked:
        out += [f"- The other program's rows: {section.rows_checked}."]
    out += [f"- {note}" for note in section.notes]
    if section.writer_exit not in (None, 0):
        out += [f"- writer exit code {section.writer_exit}"]
    return [*out, ""]


def other_writer_targets(section: OtherWriter) -> list[Target]:
    """The issue's targets for another program beside OTHER_P flooding GUIs."""
    name = f"another program beside {section.procs} flooding GUIs"
    w = section.waits
    targets = []
    for label, value, limit in (
        ("write wait p99", w.p99 if w else None, TARGET_OTHER_WAIT_P99_NS),
        ("write wait max", w.max if w else None, TARGET_OTHER_WAIT_MAX_NS),
    ):
        targets.append(
            Target(
                f"{name}: {label} ≤ {fmt_ns(limit)}",
                fmt_ns(value),
                fmt_ns(limit),
                fmt_ratio(value, limit),
                None if value is None else value <= limit,
            )
        )
    targets.append(
        Target(
            f"{name}: no write fails",
            f"{section.errors} of {section.writes}",
            "0",
            "n/a",
            None if not section.writes else section.errors == 0,
        )
    )
    peak, bound = section.wal_peak.get("with"), section.wal_bound_pages
    targets.append(
        Target(
            f"{name}: WAL peak ≤ its bound (WAL_RESTART_PAGES)",
            _pages(peak, section.page_size),
            _pages(bound, section.page_size),
            fmt_ratio(peak, bound),
            None if peak is None or bound is None else peak <= bound,
        )
    )
    return targets


def render_one_section(
    results: Results,
    what: str,
    option: str,
    load_key: str,
    lines: list[str],
    targets: list[Target],
    targets_title: str = "Targets",
) -> str:
    """One section measured alone, with the versions, the competing load and its targets (printed)."""
    load = results.other_load.get(load_key)
    out = [
        f"{what} only: `tools/bench.py {option}` on {results.started} in"
        f" {results.duration_s:.0f} s; CPU used by other processes meanwhile: "
        + ("n/a" if load is None else f"{load[0]:.2f} cores on average, {load[1]:.2f} at most")
        + ".",
        "",
    ]
    out += [f"- {name}: {value}" for name, value in results.versions] + [""]
    return "\n".join(out + lines + _targets_table(targets_title, targets))


def render_other_writer_only(results: Results) -> str:
    """The other-writer section and its targets of an `--only other-writer` run (printed, never written)."""
    targets = other_writer_targets(results.other_writer) if results.other_writer is not None else []
    return render_one_section(
        results,
        "Another program",
        "--only other-writer",
        "other-writer section",
        _other_writer_section(results),
        targets,
    )


FEED_HEADER = "## Live views (change feed)"
FEED_COST_PHASES = (
    ("0 watchers", "no watcher"),
    ("1 watcher", "1 watcher"),
    ("8 watchers", "8 watchers"),
    ("0 watchers, again", "no watcher, again"),
)
FEED_STOP_PHASES = (
    ("1 watcher reading", "the watcher reading"),
    ("the watcher stopped", "the watcher stopped (SIGSTOP)"),
    ("reading again", "the watcher reading again"),
)


def _mean_rate(section: FeedSection, names: Sequence[str]) -> float | None:
    rates = [section.phases[n].rate for n in names if n in section.phases and section.phases[n].rate]
    return sum(rates) / len(rates) if rates else None


def _feed_phase_table(
    section: FeedSection,
    phases: Sequence[tuple[str, str]],
    second: tuple[str, Callable[[str], str]] | None,
    ratio: tuple[str, float | None],
    last: tuple[str, Callable[[str], str]],
) -> list[str]:
    """Flood phases: window, committed rows/s, ÷ the baseline, the writer's CPU, and one more column."""
    rows = []
    for name, title in phases:
        phase = section.phases.get(name)
        rate = phase.rate if phase else None
        rows.append(
            [
                title,
                *([second[1](name)] if second else []),
                f"{phase.window_s:.1f} s" if phase else "n/a",
                fmt_rate(rate),
                fmt_ratio(rate, ratio[1]),
                _num(section.writer_cpu.get(name), 2),
                last[1](name),
            ]
        )
    header = ["phase", *([second[0]] if second else []), "window", "committed rows/s", ratio[0]]
    return _table([*header, "writer CPU s/s", last[0]], rows)


def _feed_section(results: Results) -> list[str]:
    """Commit -> delivered, the feed's cost to the writer, a stopped watcher, no writer."""
    section = results.feed
    out = [FEED_HEADER, ""]
    if section is None:
        return [*out, "not measured", ""]
    s = results.settings
    out += [
        f"{section.procs} GUI processes ({WORKLOAD_TITLES[section.workload]}) and one writer on one fresh"
        " file; each watcher is a process of its own calling `Reader.watch()` with no filter and taking"
        " every item as it comes, as a GUI that redraws at once would. In this order: the GUIs flood"
        " (each pauses while"
        f" {FLOOD_BACKLOG_CAP:,} of its operations wait, as above) with 0, 1 and 8 watchers and with 0"
        f" again; each GUI at {FEED_LIGHT_FRACTION:g} of that peak with one watcher; the GUIs flood"
        " while that watcher reads, is stopped, and reads again; then the writer stops and plain"
        f" sqlite3 changes the file. Each phase runs {s.seconds:g} s after {s.warmup:g} s of warm-up"
        f" (the stopped one {s.feed_stop_seconds:g} s).",
        "",
    ]
    if section.error:
        out += [f"**failed:** {section.error}", ""]

    out += [f"### Commit → delivered, each GUI at {FEED_LIGHT_FRACTION:g} of the peak rate", ""]
    light = section.light
    rate_text = (
        f"{fmt_rate(light.per_gui_rate)} operations/s per GUI ({FEED_LIGHT_FRACTION:g} of"
        f" {fmt_rate(section.peak_rate)} rows/s, the mean of the two floods without a watcher)"
        if light is not None
        else "not run"
    )
    out += [
        f"{rate_text}. Every instant is the wall clock (`time.time_ns()`), which all processes of this"
        " machine read from one kernel clock; delivered is when the watcher's `get()` returned it."
        " The writer reports no commit instant, so the first row starts earlier: at the stamp the"
        " writer takes before it prepares a batch (the `last_updated` it writes), read back for each"
        " task and workflow whose completion the watcher delivered (their last change in the mix)."
        " It is an upper bound of commit → delivered that also holds preparing, applying and"
        " committing the batch. The next two rows time the mix's audit events from the Client call"
        " (their `timestamp`): through the feed, and by a Reader polling every 1 ms (another"
        " process than the GUIs and the writer, as in the write sections), in the same phase.",
        "",
    ]
    rows = []
    for title, latency in (
        ("writer's stamp → delivered (commit → delivered, an upper bound)", section.stamp_to_delivered),
        ("send → delivered by the feed", section.send_to_delivered),
        ("send → visible, polling every 1 ms", section.send_to_visible),
    ):
        rows.append(
            [
                title,
                *(fmt_ns(getattr(latency, k) if latency else None) for k in ("p50", "p99", "p999", "max")),
                str(latency.n if latency else 0),
            ]
        )
    out += _table(["path", "p50", "p99", "p99.9", "max", "samples"], rows)
    resyncs = ", ".join(f"{cause} {n}" for cause, n in sorted(section.light_resyncs.items())) or "none"
    out += [
        f"The watcher handed over {section.light_changes:,} changes and these resyncs: {resyncs}"
        f" (a commit of more than {_max_records()} records is one Resync, many_changes, whose changes"
        f" are not timed). Cores busy: {_num(section.machine_busy_light, 2)} of {os.cpu_count()}.",
        "",
    ]

    out += ["### The writer's committed rows/s with 0, 1 and 8 watchers", ""]
    baseline = _mean_rate(section, ("0 watchers", "0 watchers, again"))
    out += _feed_phase_table(
        section,
        FEED_COST_PHASES,
        ("watchers", lambda name: str(section.watchers.get(name, 0))),
        ("÷ no watcher (mean of both)", baseline),
        ("notices per watcher", lambda name: _num(section.notices_per_watcher.get(name))),
    )
    out += [
        "With no watcher the writer still describes each batch and sends its notice to the PUB"
        " socket (it has no switch to turn the feed off): the ratios are what subscribers add.",
        "",
    ]

    out += [f"### A watcher stopped for {s.feed_stop_seconds:g} s while the GUIs flood", ""]
    without = _mean_rate(section, ("1 watcher reading", "reading again"))
    out += _feed_phase_table(
        section,
        FEED_STOP_PHASES,
        None,
        ("÷ reading (mean of both)", without),
        ("writer peak RSS", lambda name: fmt_mb(section.writer_rss_peak.get(name))),
    )
    resumed = ", ".join(f"{cause} {n}" for cause, n in sorted(section.resume_resyncs.items())) or "none"
    out += [
        f"- SIGSTOP to SIGCONT: {_num(section.stop_s)} s. The stopped watcher's RSS:"
        f" {fmt_mb(section.watcher_rss_before)} before, {fmt_mb(section.watcher_rss_peak)} at its peak"
        f" (sampled every 50 ms until it had caught up), {fmt_mb(section.watcher_rss_after)} after;"
        f" what its queues may hold: {fmt_mb(section.queue_bound_bytes)} (`RECEIVE_HIGH_WATER_MARK`"
        " of the largest notices, and `max_pending` items at"
        f" {FEED_ITEM_BYTES} B).",
        f"- The writer committed {_count(section.commits_during_stop)} times from SIGSTOP until the"
        f" watcher had caught up; the watcher received {_count(section.notices_after_stop)} notices"
        f" of them, and handed over these resyncs: {resumed}; caught up"
        f" {_num(section.resumed_in_s, 2)} s after SIGCONT.",
        "",
    ]

    out += ["### No writer running: the watcher polls the file", ""]
    delays = Latency.of(section.no_writer)
    out += [
        "The writer stopped; the watcher, with no notice for"
        f" {section.silence_s:g} s (`NOTICE_SILENCE_S`), polls `PRAGMA data_version` and the file's size"
        f" every {section.poll_interval_s:g} s (`POLL_INTERVAL_S`). Plain sqlite3 inserts one audit event"
        " at a time; from its COMMIT's return to the watcher handing over Resync(other_writer).",
        "",
    ]
    out += _table(
        ["changes", "p50", "max", "poll interval"],
        [
            [
                str(len(section.no_writer)),
                fmt_ns(delays.p50 if delays else None),
                fmt_ns(delays.max if delays else None),
                fmt_ns(section.poll_interval_s * 1e9),
            ]
        ],
    )
    out += [f"- {note}" for note in section.notes]
    if section.writer_exit not in (None, 0):
        out += [f"- writer exit code {section.writer_exit}"]
    return [*out, ""]


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _max_records() -> int:
    from see_persistence.protocol.feed import MAX_RECORDS

    return MAX_RECORDS


def feed_targets(section: FeedSection) -> list[Target]:
    """Issue 14's numbers: commit -> delivered, the feed's cost, a stopped watcher."""
    targets = []
    d = section.stamp_to_delivered
    value = d.p99 if d else None
    targets.append(
        Target(
            f"feed: commit → delivered p99 ≤ {fmt_ns(TARGET_FEED_DELIVERED_P99_NS)}, {section.procs} GUIs at"
            f" {FEED_LIGHT_FRACTION:g} of the peak (from the writer's stamp: an upper bound)",
            fmt_ns(value),
            fmt_ns(TARGET_FEED_DELIVERED_P99_NS),
            fmt_ratio(value, TARGET_FEED_DELIVERED_P99_NS),
            None if value is None else value <= TARGET_FEED_DELIVERED_P99_NS,
        )
    )
    baseline = _mean_rate(section, ("0 watchers", "0 watchers, again"))
    without = _mean_rate(section, ("1 watcher reading", "reading again"))
    for label, name, base in (
        ("1 watcher", "1 watcher", baseline),
        ("8 watchers", "8 watchers", baseline),
        ("a watcher stopped", "the watcher stopped", without),
    ):
        phase = section.phases.get(name)
        rate = phase.rate if phase else None
        ratio = rate / base if rate is not None and base else None
        targets.append(
            Target(
                f"feed: writer rows/s with {label} ≥ {TARGET_FEED_COST_RATIO:g}{TIMES} without",
                fmt_rate(rate),
                fmt_rate(base),
                fmt_ratio(rate, base),
                None if ratio is None else ratio >= TARGET_FEED_COST_RATIO,
            )
        )
    grew = (
        section.watcher_rss_peak - section.watcher_rss_before
        if section.watcher_rss_peak is not None and section.watcher_rss_before is not None
        else None
    )
    bound = section.queue_bound_bytes
    targets.append(
        Target(
            "feed: a stopped watcher's RSS grows ≤ what its queues may hold",
            fmt_mb(grew),
            fmt_mb(bound),
            fmt_ratio(grew, bound),
            None if grew is None or bound is None else grew <= bound,
        )
    )
    lost = (
        None
        if section.commits_during_stop is None or section.notices_after_stop is None
        else max(0, section.commits_during_stop - section.notices_after_stop)
    )
    told = sum(section.resume_resyncs.get(c, 0) for c in ("missed", "overflow"))
    targets.append(
        Target(
            "feed: a resumed watcher reports what it lost as a Resync (missed/overflow), never silence",
            "n/a" if lost is None else f"{lost:,} notices lost, {told} such resyncs",
            "a resync if any was lost",
            "n/a",
            None if lost is None else (told > 0 or lost == 0),
        )
    )
    return targets


def render_feed_only(results: Results) -> str:
    """The live-views section and its targets of an `--only feed` run (printed, never written)."""
    targets = feed_targets(results.feed) if results.feed is not None else []
    return render_one_section(
        results, "Live views", "--only feed", "feed section", _feed_section(results), targets
    )


def _reads_section(results: Results) -> list[str]:
    reads = results.reads
    out = ["## Reads", ""]
    if reads is None:
        return [*out, "not measured", ""]
    out += [
        f"A database of {reads.workflows:,} workflows, {reads.tasks:,} tasks, {reads.events:,} audit events"
        f" ({READ_INSTANCES} instances; every {READ_CHILDREN_EVERY}th workflow has 5 tasks and 10 events),"
        f" built or reused in {reads.build_s:.1f} s. Median per call, Reader beside the same SQL"
        " through raw sqlite3 (tuples).",
        "",
    ]
    if reads.error:
        out += [f"**failed:** {reads.error}", ""]
    rows = [
        [
            f.name,
            f"{f.rows_per_call:.0f}",
            fmt_ns(f.ours_ns),
            fmt_ns(f.raw_ns),
            fmt_ratio(f.ours_ns, f.raw_ns),
            str(f.calls),
        ]
        for f in reads.figures
    ]
    out += ["### Queries", ""]
    out += _table(["query", "rows", "Reader", "raw sqlite3", "ratio", "calls"], rows)
    out += ["### Rows materialized as models", ""]
    rows = [
        [name, fmt_rate(ours), fmt_rate(raw), fmt_ratio(ours, raw)] for name, ours, raw in reads.materialize
    ]
    out += _table(["query", "Reader rows/s (models)", "raw sqlite3 rows/s (tuples)", "ratio"], rows)
    return out


def render_reads_only(results: Results) -> str:
    """The reads section and the read targets of a `--reads-only` run (printed, never written)."""
    targets = read_targets(results.reads) if results.reads is not None else []
    return render_one_section(
        results, "Reads", "--reads-only", "reads", _reads_section(results), targets, "Read targets"
    )


def _targets_table(title: str, targets: list[Target]) -> list[str]:
    """A section of targets: each one's measurement beside its limit, met or not."""
    def verdict(target: Target) -> str:
        return "n/a" if target.met is None else ("met" if target.met else "**not met**")

    rows = [[t.name, t.measured, t.baseline, t.ratio, verdict(t)] for t in targets]
    return [f"### {title}", "", *_table(["target", "measured", "baseline / limit", "ratio", "result"], rows)]


def _target_p(settings: Settings) -> int:
    if TARGET_P in settings.procs:
        return TARGET_P
    below = [p for p in settings.procs if p <= TARGET_P]
    return max(below) if below else min(settings.procs)


@dataclass
class Target:
    """One target line."""

    name: str
    measured: str
    baseline: str
    ratio: str
    met: bool | None


def evaluate_targets(results: Results) -> list[Target]:
    """Every target of the issue, met / not met / not measured."""
    p = _target_p(results.settings)
    targets: list[Target] = []

    def check(
        name: str,
        value: float | None,
        limit: float,
        *,
        at_least: bool,
        show: Callable[[float], str],
        base: str = "",
    ) -> None:
        if value is None:
            targets.append(Target(name, "n/a", base or show(limit), "n/a", None))
            return
        met = value >= limit if at_least else value <= limit
        targets.append(Target(name, show(value), base or show(limit), fmt_ratio(value, limit), met))

    for workload in WORKLOADS:
        w = "audit" if workload == "audit" else "mix"
        ours = results.cells.get((workload, "ours", p))
        same = results.cells.get((workload, "naive-same", p))
        ceiling = results.ceilings.get(workload)
        o, s, c = _rate(ours), _rate(same), _rate(ceiling)
        ratio = o / s if o is not None and s else None
        targets.append(
            Target(
                f"{w}: rows/s, P={p}, ≥ {TARGET_THROUGHPUT_VS_NAIVE:g}{TIMES} naive (same ids)",
                fmt_rate(o),
                fmt_rate(s),
                fmt_ratio(o, s),
                None if ratio is None else ratio >= TARGET_THROUGHPUT_VS_NAIVE,
            )
        )
        ratio = o / c if o is not None and c else None
        targets.append(
            Target(
                f"{w}: rows/s, P={p}, ≥ {TARGET_THROUGHPUT_VS_CEILING:.0%} of the ceiling",
                fmt_rate(o),
                fmt_rate(c),
                fmt_ratio(o, c),
                None if ratio is None else ratio >= TARGET_THROUGHPUT_VS_CEILING,
            )
        )
        for label, phase_name, quantile, limit in (
            ("call p99 at half peak", "paced", "p99", TARGET_CALL_P99_NS),
            ("call p99.9 at half peak", "paced", "p999", TARGET_CALL_P999_NS),
            ("call max at half peak", "paced", "max", TARGET_CALL_MAX_NS),
            ("call p99 flooding", "flood", "p99", TARGET_CALL_P99_NS),
            ("call p99 writer absent", "absent", "p99", TARGET_CALL_P99_NS),
        ):
            latency = _lat(ours, phase_name)
            check(
                f"{w}: {label}, P={p}",
                getattr(latency, quantile) if latency else None,
                limit,
                at_least=False,
                show=fmt_ns,
            )
        visible = ours.visible if ours else None
        check(
            f"{w}: send → visible p99 at half peak, P={p}",
            visible.p99 if visible else None,
            TARGET_VISIBLE_P99_NS,
            at_least=False,
            show=fmt_ns,
        )
        o_disk = ours.bytes_per_unit if ours else None
        r_disk = ours.raw_bytes_per_unit if ours else None
        ratio = o_disk / r_disk if o_disk is not None and r_disk else None
        targets.append(
            Target(
                f"{w}: disk per row ≤ {TARGET_DISK_RATIO:g}{TIMES} the same rows inserted raw, P={p}",
                fmt_bytes(o_disk),
                fmt_bytes(r_disk),
                fmt_ratio(o_disk, r_disk),
                None if ratio is None else ratio <= TARGET_DISK_RATIO,
            )
        )
    rss = [c.writer_rss for c in results.cells.values() if c.system == "ours" and c.writer_rss is not None]
    check(
        "writer RSS at peak (all runs) ≤ 60 MB",
        max(rss) if rss else None,
        TARGET_WRITER_RSS_BYTES,
        at_least=False,
        show=fmt_mb,
    )
    if results.other_writer is not None:
        targets += other_writer_targets(results.other_writer)
    if results.feed is not None:
        targets += feed_targets(results.feed)
    if results.reads is not None:
        targets += read_targets(results.reads)
    return targets


def read_targets(reads: Reads) -> list[Target]:
    """The read targets: each query against raw sqlite3, list calls in absolute time, rows/s."""
    targets: list[Target] = []
    for f in reads.figures:
        ratio = f.ours_ns / f.raw_ns if f.raw_ns else None
        targets.append(
            Target(
                f"read {f.name} ≤ {TARGET_READ_RATIO:g}{TIMES} raw sqlite3",
                fmt_ns(f.ours_ns),
                fmt_ns(f.raw_ns),
                fmt_ratio(f.ours_ns, f.raw_ns),
                None if ratio is None else ratio <= TARGET_READ_RATIO,
            )
        )
        if f.limit_ns is not None:
            targets.append(
                Target(
                    f"read {f.name} ≤ {fmt_ns(f.limit_ns)} per call",
                    fmt_ns(f.ours_ns),
                    fmt_ns(f.limit_ns),
                    fmt_ratio(f.ours_ns, f.limit_ns),
                    f.ours_ns <= f.limit_ns,
                )
            )
    bulk = reads.materialize[0] if reads.materialize else None
    targets.append(
        Target(
            f"rows/s materialized as models ≥ {TARGET_MATERIALIZE_ROWS_S // 1000}k",
            fmt_rate(bulk[1]) if bulk else "n/a",
            fmt_rate(TARGET_MATERIALIZE_ROWS_S),
            fmt_ratio(bulk[1], TARGET_MATERIALIZE_ROWS_S) if bulk else "n/a",
            None if bulk is None else bulk[1] >= TARGET_MATERIALIZE_ROWS_S,
        )
    )
    return targets


def _versions() -> list[tuple[str, str]]:
    import msgpack
    import psutil
    import pydantic
    import zmq

    return [
        ("Python", platform.python_version() + f" ({platform.python_implementation()})"),
        ("SQLite", sqlite3.sqlite_version),
        ("pyzmq / libzmq", f"{zmq.__version__} / {zmq.zmq_version()}"),
        ("msgpack", ".".join(str(v) for v in msgpack.version)),
        ("pydantic", pydantic.VERSION),
        ("psutil", psutil.__version__),
        ("see-persistence", _git_revision()),
    ]


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def _machine() -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return [
        ("CPU", f"{model}, {os.cpu_count()} logical CPUs (nproc)"),
        ("RAM", ram),
        ("OS", f"{platform.system()} {platform.release()}"),
    ]


def _command() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe, *sys.argv])


def render(results: Results) -> str:
    """The whole report as markdown."""
    s = results.settings
    out = ["# Benchmarks", ""]
    out += [
        f"Written by `tools/bench.py` on {results.started} in {results.duration_s:.0f} s"
        + (" — **quick mode: tiny cells, indicative only**." if s.quick else "."),
        "Every figure is beside its baseline, measured in the same run on the same machine.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in _machine()]
    lb, la = results.load_before, results.load_after
    out += [
        f"- load average (1/5/15 min): {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f} before,"
        f" {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} after",
    ]
    for section, load in results.other_load.items():
        text = "n/a" if load is None else f"{load[0]:.2f} cores on average, {load[1]:.2f} at most"
        out += [
            f"- CPU used by other processes (not this benchmark's) during the {section}: {text}"
            + (" — **the machine was shared; figures are disturbed**" if load and load[0] > 0.25 else "")
        ]
    out += [""]
    out += ["## Versions", ""]
    out += [f"- {k}: {v}" for k, v in (results.versions or _versions())]
    out += ["", "## Command", "", "```sh", _command(), "```", ""]
    out += [
        "## Method",
        "",
        f"- P = {', '.join(map(str, s.procs))} GUI processes; each cell runs {s.seconds:g} s after"
        f" {s.warmup:g} s of warm-up, on a fresh database. Rows/s count the operations committed inside the"
        " window (for us: confirmed by the writer's commit notices), summed over the GUI processes.",
        "- naive: every GUI process has its own connection (WAL, synchronous=NORMAL, busy_timeout 30 s,"
        " foreign_keys=ON) and runs the writer's own statements (`protocol/statements.py`), each operation"
        " its own transaction; once with our time-ordered ids, once with uuid4 ids.",
        "- see-persistence: P GUI processes calling `Client`, one `see-persistence writer` process."
        " A flooding GUI pauses (outside the timed calls) while more than"
        f" {FLOOD_BACKLOG_CAP:,} of its operations wait unconfirmed, so nothing is dropped and the"
        " writer stays saturated.",
        "- ceiling: one process, the same statements, `executemany` in transactions of"
        f" {CEILING_OPS_PER_TRANSACTION} operations (the mix grouped by statement); only SQLite time counts.",
        "- latencies: `time.perf_counter_ns()` around each call in the GUI processes; percentiles"
        " (nearest rank) of all samples of all GUIs together, never averaged.",
        "- writer CPU and RSS: psutil on the writer's pid every 50 ms.",
    ]
    if results.floor is not None:
        f = results.floor
        out += [
            "- the machine's own floor: `json.dumps({'n': i})` timed the same way at 2,000 calls/s, alone:"
            f" p50 {fmt_ns(f.p50)}, p99 {fmt_ns(f.p99)}, p99.9 {fmt_ns(f.p999)}, max {fmt_ns(f.max)}"
            " (a call after a sleep runs on cold caches)."
        ]
    out += _busy_floor_lines(results.busy_floors)
    out += [""]
    for workload in WORKLOADS:
        out += _workload_section(results, workload)
    out += _other_writer_section(results)
    out += _feed_section(results)
    out += _reads_section(results)
    out += ["## Targets", ""]
    p = _target_p(s)
    if p != TARGET_P:
        out += [f"P={TARGET_P} was not run; the targets are judged at P={p}.", ""]
    rows = [
        [
            t.name,
            t.measured,
            t.baseline,
            t.ratio,
            "not measured" if t.met is None else ("met" if t.met else "**not met**"),
        ]
        for t in evaluate_targets(results)
    ]
    out += _table(["target", "measured", "baseline / limit", "ratio", "result"], rows)
    notes = []
    for cell in [*results.ceilings.values(), *results.cells.values()]:
        label = (
            f"{WORKLOAD_TITLES[cell.workload].split(' (')[0]}, {SYSTEM_TITLES[cell.system]}, P={cell.procs}"
        )
        if cell.error:
            notes.append(f"- {label}: **failed**: {cell.error}")
        for note in cell.notes:
            notes.append(f"- {label}: {note}")
        if cell.writer_exit and any(code != 0 for code in cell.writer_exit):
            notes.append(f"- {label}: writer exit codes {cell.writer_exit}")
        if cell.drain_s is not None:
            notes.append(f"- {label}: the backlog after the flood drained in {cell.drain_s:.2f} s")
    if results.other_writer and results.other_writer.error:
        notes.append(f"- another program beside the GUIs: **failed**: {results.other_writer.error}")
    if results.feed and results.feed.error:
        notes.append(f"- live views (change feed): **failed**: {results.feed.error}")
    if results.reads and results.reads.error:
        notes.append(f"- reads: **failed**: {results.reads.error}")
    if notes:
        out += ["## Notes", "", *notes, ""]
    for name, text in results.profiles:
        out += [f"## Writer profile: {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


def write_plot(results: Results, output: Path) -> Path | None:
    """A latency plot next to the report, where matplotlib is installed (an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = output.with_name(output.stem + "_latency.png")
    p = _target_p(results.settings)
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(12, 4.5), squeeze=False)
    for ax, workload in zip(axes[0], WORKLOADS, strict=True):
        for system, phase, style in (
            ("naive-same", "paced", "--"),
            ("ours", "paced", "-"),
            ("ours", "flood", ":"),
            ("ours", "absent", "-."),
        ):
            lat = _lat(results.cells.get((workload, system, p)), phase)
            if lat is None:
                continue
            xs = [-math.log10(1 - f) for f, _ in lat.curve]
            ax.plot(xs, [v / 1000 for _, v in lat.curve], style, label=f"{SYSTEM_TITLES[system]}, {phase}")
        ax.set_yscale("log")
        ax.set_xticks([math.log10(2), 1, 2, 3, 4])
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
        ax.set_ylabel("write call (µs)")
        ax.set_title(f"{WORKLOAD_TITLES[workload].split(' (')[0]}, P={p}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _profile_summary(path: Path, limit: int = 20) -> str:
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    return buffer.getvalue()


# ================================================================================================
# Main
# ================================================================================================


def _guard(label: str, fn: Callable[[], Any], make_failed: Callable[[str], Any]) -> Any:
    log.info("running %s", label)
    t0 = time.monotonic()
    try:
        result = fn()
    except Exception as exc:
        log.exception("%s failed", label)
        return make_failed(
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
    log.info("%s done in %.1f s", label, time.monotonic() - t0)
    return result


def measure_floor(seconds: float, rate: float = 2000.0) -> Latency | None:
    """json.dumps of a small dict, paced and timed like the GUI calls: what this machine adds by itself."""
    pc = time.perf_counter_ns
    dumps = json.dumps
    samples: list[int] = []
    start = time.monotonic()
    done = 0
    while time.monotonic() < start + seconds:
        due = int((time.monotonic() - start) * rate) + 1
        while done < due:
            t0 = pc()
            dumps({"n": done})
            t1 = pc()
            samples.append(t1 - t0)
            done += 1
        wait = start + done / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    return Latency.of(samples)


_BUSY_FLOOR_CHILD = """
import json, sys, time
from array import array
seconds, out, reps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pc, dumps, samples = time.perf_counter_ns, json.dumps, array("q")
stop = time.monotonic() + seconds
n = 0
while True:
    t0 = pc()
    for _ in range(reps):
        dumps({"n": n})
    samples.append(pc() - t0)
    n += 1
    if n & 63 == 0 and time.monotonic() >= stop:
        break
open(out, "wb").write(samples.tobytes())
"""


# json.dumps calls per timed call: one, and enough to last about as long as a Client call.
BUSY_FLOOR_REPS = (1, 4)


def measure_busy_floor(procs: int, seconds: float, work_dir: Path, reps: int = 1) -> Latency | None:
    """`procs` processes flooding `reps` json.dumps per timed call at once, timed like the GUI
    calls: what sharing this machine's cores alone does to a call's tail (no see-persistence)."""
    paths = [work_dir / f"busy-floor-{reps}-{i}.bin" for i in range(procs)]
    children = [
        subprocess.Popen([sys.executable, "-c", _BUSY_FLOOR_CHILD, str(seconds), str(path), str(reps)])
        for path in paths
    ]
    for child in children:
        child.wait(timeout=seconds + 60)
    samples: list[int] = []
    for path in paths:
        if path.exists():
            chunk = array("q")
            chunk.frombytes(path.read_bytes())
            samples.extend(chunk)
    return Latency.of(samples)


def measure_busy_floors(procs: int, seconds: float) -> list[tuple[int, int, Latency]]:
    """The busy floor for each of BUSY_FLOOR_REPS, one after the other."""
    floors = []
    with tempfile.TemporaryDirectory(prefix="see-bench-floor-") as floor_dir:
        for reps in BUSY_FLOOR_REPS:
            latency = measure_busy_floor(procs, seconds, Path(floor_dir), reps)
            if latency is not None:
                floors.append((procs, reps, latency))
    return floors


def _busy_floor_lines(floors: Sequence[tuple[int, int, Latency]]) -> list[str]:
    lines = []
    for procs, reps, f in floors:
        what = "the same call" if reps == 1 else f"{reps} such calls timed as one (as long as a Client call)"
        cpus = os.cpu_count() or 1
        who = f"{procs} processes at once" if procs > 1 else "one process"
        why = " (a process sharing a core is preempted in the middle of some calls)" if procs > cpus else ""
        lines.append(
            f"- {what}, flooded by {who} on these {cpus} CPUs:"
            f" p50 {fmt_ns(f.p50)}, p99 {fmt_ns(f.p99)}, p99.9 {fmt_ns(f.p999)}, max {fmt_ns(f.max)}{why}."
        )
    return lines


def run_all(settings: Settings) -> Results:
    """Every cell, in a fixed order, each bounded and guarded."""
    results = Results(settings)
    results.started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.load_before = os.getloadavg()
    results.versions = _versions()  # before the run: src/ may change while it runs
    t0 = time.monotonic()
    watcher = LoadWatcher()
    watcher.start()
    try:
        results.floor = measure_floor(0.3 if settings.quick else 2.0)
        results.busy_floors = measure_busy_floors(_target_p(settings), 0.5 if settings.quick else 3.0)
        _run_cells(settings, results, watcher)
    finally:
        watcher.stop()
    results.duration_s = time.monotonic() - t0
    results.load_after = os.getloadavg()
    return results


def _run_cells(settings: Settings, results: Results, watcher: LoadWatcher) -> None:
    """The write cells, then the reads, each section's competing load noted."""
    writes_started = time.monotonic()
    for workload in WORKLOADS:

        def failed(reason: str, system: str = "ceiling", p: int = 1, w: str = workload) -> Cell:
            return Cell(system, w, p, error=reason)

        results.ceilings[workload] = _guard(
            f"{workload} ceiling", lambda w=workload: run_ceiling(settings, w), failed
        )
        for p in settings.procs:
            for system in SYSTEMS:
                if system == "ours":
                    fn: Callable[[], Cell] = lambda w=workload, p=p: run_ours_group(settings, w, p)  # noqa: E731
                else:
                    fn = lambda w=workload, p=p, s=system: run_naive_group(settings, w, p, s)  # noqa: E731
                results.cells[(workload, system, p)] = _guard(
                    f"{workload} {system} P={p}", fn, lambda r, s=system, p=p: failed(r, s, p)
                )
                cell = results.cells[(workload, system, p)]
                log.info(
                    "%s %s P=%d: %s ops/s, call p99 %s",
                    workload,
                    system,
                    p,
                    fmt_rate(_rate(cell)),
                    fmt_ns(_lat(cell, "flood").p99 if _lat(cell, "flood") else None),
                )

    def reads_failed(reason: str) -> Reads:
        return Reads(0, 0, 0, 0.0, error=reason)

    other_started = time.monotonic()
    results.other_load["writes"] = watcher.between(writes_started, other_started)
    results.other_writer = _guard(
        "another program beside flooding GUIs",
        lambda: run_other_writer(settings),
        lambda reason: OtherWriter(error=reason),
    )
    feed_started = time.monotonic()
    results.other_load["other-writer section"] = watcher.between(other_started, feed_started)
    results.feed = _guard("live views (change feed)", lambda: run_feed(settings), _failed_feed)
    reads_started = time.monotonic()
    results.other_load["feed section"] = watcher.between(feed_started, reads_started)
    results.reads = _guard("reads", lambda: run_reads(settings), reads_failed)
    results.other_load["reads"] = watcher.between(reads_started, time.monotonic())
    if settings.profile_dir:
        for prof in sorted(settings.profile_dir.glob("writer-*.prof")):
            with contextlib.suppress(Exception):
                results.profiles.append((prof.stem, _profile_summary(prof)))


def _run_one_section(settings: Settings, load_key: str, run: Callable[[Results], None]) -> Results:
    """One section alone, with the versions and the competing load noted (no write cells, no floors)."""
    results = Results(settings)
    results.started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.versions = _versions()
    t0 = time.monotonic()
    watcher = LoadWatcher()
    watcher.start()
    try:
        run(results)
        results.other_load[load_key] = watcher.between(t0, time.monotonic())
    finally:
        watcher.stop()
    results.duration_s = time.monotonic() - t0
    return results


def run_reads_only(settings: Settings) -> Results:
    """Only the reads, with the competing load noted (no write cells, no call floors)."""

    def reads(results: Results) -> None:
        results.reads = _guard(
            "reads", lambda: run_reads(settings), lambda reason: Reads(0, 0, 0, 0.0, error=reason)
        )

    return _run_one_section(settings, "reads", reads)


def run_other_writer_only(settings: Settings) -> Results:
    """Only the other program beside flooding GUIs, with the competing load noted."""

    def other_writer(results: Results) -> None:
        results.other_writer = _guard(
            "another program beside flooding GUIs",
            lambda: run_other_writer(settings),
            lambda reason: OtherWriter(error=reason),
        )

    return _run_one_section(settings, "other-writer section", other_writer)


def _failed_feed(reason: str) -> FeedSection:
    return FeedSection(error=reason)


def run_feed_only(settings: Settings) -> Results:
    """Only the change feed's section, with the competing load noted."""

    def feed(results: Results) -> None:
        results.feed = _guard("live views (change feed)", lambda: run_feed(settings), _failed_feed)

    return _run_one_section(settings, "feed section", feed)


def _failures(results: Results) -> list[str]:
    failed = [
        f"{c.workload} {c.system} P={c.procs}"
        for c in [*results.ceilings.values(), *results.cells.values()]
        if c.error
    ]
    if results.other_writer is not None and results.other_writer.error:
        failed.append("another program beside flooding GUIs")
    if results.feed is not None and results.feed.error:
        failed.append("live views (change feed)")
    if results.reads is not None and results.reads.error:  # None: a run of another section alone
        failed.append("reads")
    return failed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python tools/bench.py --quick\n"
        "  python tools/bench.py --procs 1,4 --seconds 3 --no-write",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--procs", help="GUI process counts (default 1,2,4,8; quick 1,4)")
    parser.add_argument("--seconds", type=float, help="seconds measured per cell (default 5; quick 0.5)")
    parser.add_argument(
        "--quick", action="store_true", help="small and fast: under a minute, same table shape"
    )
    parser.add_argument(
        "--read-workflows", type=int, help="workflows in the read database (default 1,000,000; quick 20,000)"
    )
    parser.add_argument("--read-cache", type=Path, help="keep and reuse the read database in this directory")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the markdown report (default {DEFAULT_OUTPUT.relative_to(ROOT)}; quick: none)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no report")
    parser.add_argument(
        "--reads-only", action="store_true", help="run only the reads and print them (writes no report)"
    )
    parser.add_argument(
        "--floors", action="store_true", help="measure only the machine's call floors, print them, exit"
    )
    parser.add_argument(
        "--only",
        choices=["other-writer", "feed"],
        help="run one section alone and print it (writes no report): other-writer, another program"
        f" writing beside {OTHER_P} flooding GUIs; feed, live views (the change feed)",
    )
    parser.add_argument(
        "--other-seconds",
        type=float,
        help=f"seconds of the phase with the other program writing (default {OTHER_SECONDS:g};"
        f" quick {OTHER_QUICK_SECONDS:g})",
    )
    parser.add_argument(
        "--feed-stop-seconds",
        type=float,
        help=f"seconds a watcher is stopped while the GUIs flood (default {FEED_STOP_SECONDS:g};"
        f" quick {FEED_QUICK_STOP_SECONDS:g})",
    )
    parser.add_argument(
        "--profile-writer", type=Path, metavar="DIR", help="run each writer under cProfile, profiles in DIR"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    # The subprocess roles (internal).
    parser.add_argument("--role", choices=["gui", "ceiling", "watcher"], help=argparse.SUPPRESS)
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT end the run through every finally block, so no child outlives it."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one subprocess role)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level if not args.role else "WARNING"),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.role == "gui":
        return gui_main(args)
    if args.role == "ceiling":
        return ceiling_main(args)
    if args.role == "watcher":
        return watcher_main(args)
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT may arrive ignored in a background job
        signal.signal(signum, _exit_on_signal)

    procs = [int(p) for p in (args.procs or ("1,4" if args.quick else "1,2,4,8")).split(",") if p.strip()]
    if not procs or min(procs) < 1:
        print("bench.py: --procs needs positive integers, e.g. 1,2,4,8", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 5.0)
    if args.floors:
        floor = measure_floor(seconds if args.seconds is not None else 2.0)
        if floor is not None:
            print(
                f"- alone, paced at 2,000 calls/s: p50 {fmt_ns(floor.p50)}, p99 {fmt_ns(floor.p99)},"
                f" p99.9 {fmt_ns(floor.p999)}, max {fmt_ns(floor.max)}"
            )
        busy_seconds = seconds if args.seconds is not None else 3.0
        for p in procs:
            for line in _busy_floor_lines(measure_busy_floors(p, busy_seconds)):
                print(line)
        return 0
    output: Path | None = None
    if not args.no_write:
        output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    profile_dir = args.profile_writer.resolve() if args.profile_writer else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="see-bench-") as tmp:
        settings = Settings(
            procs=procs,
            seconds=seconds,
            warmup=min(1.0, max(0.2, seconds / 4)),
            read_workflows=args.read_workflows or (20_000 if args.quick else 1_000_000),
            read_budget_s=0.25 if args.quick else 2.0,
            materialize_rows=2_000 if args.quick else 10_000,
            absent_cap=10_000 if args.quick else 50_000,
            quick=args.quick,
            workdir=Path(tmp),
            read_cache=args.read_cache.resolve() if args.read_cache else None,
            profile_dir=profile_dir,
            other_seconds=args.other_seconds or (OTHER_QUICK_SECONDS if args.quick else OTHER_SECONDS),
            feed_stop_seconds=args.feed_stop_seconds
            or (FEED_QUICK_STOP_SECONDS if args.quick else FEED_STOP_SECONDS),
        )
        if args.only == "other-writer":
            results = run_other_writer_only(settings)
            print(render_other_writer_only(results))
            return 1 if _failures(results) else 0
        if args.only == "feed":
            results = run_feed_only(settings)
            print(render_feed_only(results))
            return 1 if _failures(results) else 0
        if args.reads_only:
            results = run_reads_only(settings)
            print(render_reads_only(results))
            return 1 if _failures(results) else 0
        results = run_all(settings)
    report = render(results)
    print(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report + "\n" + _kept_sections(output), encoding="utf-8")
        log.info("wrote %s", output)
        plot = write_plot(results, output)
        if plot is not None:
            with output.open("a", encoding="utf-8") as f:
                f.write(f"\n![write call latency]({plot.name})\n")
            log.info("wrote %s", plot)
    failures = _failures(results)
    if failures:
        log.error("measurements that could not be made: %s", ", ".join(failures))
        return 1
    return 0


KEPT_MARKER = "<!-- kept by tools/bench.py: figures measured by other tools -->"


def _kept_sections(output: Path) -> str:
    """What follows KEPT_MARKER in the existing file (e.g. takeover times from tools/chaos.py)."""
    try:
        text = output.read_text(encoding="utf-8")
    except OSError:
        return ""
    index = text.find(KEPT_MARKER)
    return "\n" + text[index:] if index >= 0 else ""


if __name__ == "__main__":
    raise SystemExit(main())
