"""Reads on a database of 1,000,000 workflows, each Reader query beside the same SQL through raw sqlite3."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .databases import open_raw_read_only, remove_db
from .formatting import TIMES, fmt_ns, fmt_rate, fmt_ratio, markdown_table
from .settings import Settings
from .targets import Target, limit_target, ratio_target
from .workloads import TASK_NAMES, json_text

if TYPE_CHECKING:
    from .results import Results

log = logging.getLogger("bench")


READ_INSTANCES = 20
READ_CHILDREN_EVERY = 10  # every 10th workflow of the read database has 5 tasks and 10 events
TARGET_READ_RATIO = 1.5
TARGET_LIST_CALL_NS = 5_000_000  # a list call of 50 rows at 1,000,000 workflows
TARGET_MATERIALIZE_ROWS_S = 200_000


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
    title: str = "Reads"
    baseline: str = "raw sqlite3"  # what each query is timed beside: the same SQL through it


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
                        json_text({"branch": "main", "n": i}),
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
                            json_text({"j": j}),
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
    raw = open_raw_read_only(db)

    def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
        cursor = raw.execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    try:
        measure_reads(reads, reader, fetch, sample_arguments(fetch, reads), settings)
    finally:
        reader.close()
        raw.close()
    return reads


@dataclass
class ReadArguments:
    """What the queries are called with: workflow ids, ids of workflows with tasks, instance ids."""

    ids: list[str]
    parents: list[str]
    instances: list[str]


def sample_arguments(fetch: Callable[[str, Sequence[Any]], list[Any]], reads: Reads) -> ReadArguments:
    """Arguments drawn at random (seeded) from the read database through `fetch` (raw sqlite3)."""
    rng = random.Random(11)
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
    return ReadArguments(ids, parents, instances)


def measure_reads(
    reads: Reads,
    reader: Any,
    fetch: Callable[[str, Sequence[Any]], list[Any]],
    arguments: ReadArguments,
    settings: Settings,
) -> None:
    """Each Reader query beside `fetch` of the same SQL (written for SQLite: `fetch` may translate
    it), and rows/s materialized; the figures go into `reads`."""
    total = reads.workflows
    ids, parents, instances = arguments.ids, arguments.parents, arguments.instances
    newest = (
        f"SELECT {_WF_COLS} FROM workflow_executions{{}} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
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
    reads.materialize.append((f"list_workflows(limit={limit})", rows / ours_ns * 1e9, rows / raw_ns * 1e9))
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


def section_lines(results: Results) -> list[str]:
    """The reads section: each query beside raw sqlite3, and rows/s materialized as models."""
    return reads_lines(results.reads)


def reads_lines(reads: Reads | None, title: str = "Reads") -> list[str]:
    """A reads section: each query beside its baseline, and rows/s materialized as models."""
    out = [f"## {reads.title if reads is not None else title}", ""]
    if reads is None:
        return [*out, "not measured", ""]
    out += [
        f"A database of {reads.workflows:,} workflows, {reads.tasks:,} tasks, {reads.events:,} audit events"
        f" ({READ_INSTANCES} instances; every {READ_CHILDREN_EVERY}th workflow has 5 tasks and 10 events),"
        f" built or reused in {reads.build_s:.1f} s. Median per call, Reader beside the same SQL"
        f" through {reads.baseline} (tuples).",
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
    out += markdown_table(["query", "rows", "Reader", reads.baseline, "ratio", "calls"], rows)
    out += ["### Rows materialized as models", ""]
    rows = [
        [name, fmt_rate(ours), fmt_rate(raw), fmt_ratio(ours, raw)] for name, ours, raw in reads.materialize
    ]
    out += markdown_table(
        ["query", "Reader rows/s (models)", f"{reads.baseline} rows/s (tuples)", "ratio"], rows
    )
    return out


def section_targets(reads: Reads) -> list[Target]:
    """The read targets: each query against raw sqlite3, list calls in absolute time, rows/s."""
    targets: list[Target] = []
    for f in reads.figures:
        targets.append(
            ratio_target(
                f"read {f.name} ≤ {TARGET_READ_RATIO:g}{TIMES} {reads.baseline}",
                f.ours_ns,
                f.raw_ns,
                fmt_ns,
                TARGET_READ_RATIO,
                at_least=False,
            )
        )
        if f.limit_ns is not None:
            targets.append(
                limit_target(f"read {f.name} ≤ {fmt_ns(f.limit_ns)} per call", f.ours_ns, f.limit_ns, fmt_ns)
            )
    bulk = reads.materialize[0] if reads.materialize else None
    targets.append(
        limit_target(
            f"rows/s materialized as models ≥ {TARGET_MATERIALIZE_ROWS_S // 1000}k",
            bulk[1] if bulk else None,
            TARGET_MATERIALIZE_ROWS_S,
            fmt_rate,
            at_least=True,
        )
    )
    return targets
