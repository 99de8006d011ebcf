#!/usr/bin/env python3
"""How long one chunk of a prune takes, on a file of many old workflows.

    python tools/prune_chunks.py [--workflows 1000000] [--tasks 1] [--events 1] [--db PATH]
                                 [--one-transaction]

Builds (once; kept at --db, default /tmp/see-prune-chunks-N.db) a file with the writer's schema
holding N completed workflows created 40 days ago, each with one task and one audit event (as in
the issue that brought chunks in; --tasks and --events change that); copies it; then carries
out a prune of workflows older than 30 days on the copy, the way the writer does: one BEGIN
IMMEDIATE ... COMMIT per chunk of writer/retention.py's sizes, with the writer's checkpoints (a
thread of their own), and prints the chunks' durations (median, p95, p99, max) and the total.
With --one-transaction it also times the old way, the three DELETEs in one transaction, on a
second copy. It reports; it never asserts. Other processes on the machine slow it down: say
what else ran when you quote it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from see_persistence.idgen import new_id  # noqa: E402
from see_persistence.protocol import timestamps  # noqa: E402
from see_persistence.writer import retention  # noqa: E402
from see_persistence.writer.checkpointer import WAL_RESTART_PAGES, Checkpointer  # noqa: E402
from see_persistence.writer.storage import open_write_connection, upgrade_schema  # noqa: E402

DAY_US = 86_400 * 1_000_000
BUILD_BATCH = 5_000


def build(db: Path, workflows: int, tasks_each: int, events_each: int) -> None:
    """The file: the writer's schema, `workflows` old completed workflows with their tasks and events."""
    partial = db.with_suffix(".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    conn = open_write_connection(partial)
    upgrade_schema(conn, time.time_ns() // 1000)
    old_us = time.time_ns() // 1000 - 40 * DAY_US
    made = 0
    started = time.monotonic()
    while made < workflows:
        count = min(BUILD_BATCH, workflows - made)
        wf, tasks, events = [], [], []
        for n in range(made, made + count):
            at = timestamps.format_us(old_us + n)
            wid = new_id()
            wf.append((wid, f"wf-{n}", at, at, at, at))
            tasks.extend((new_id(), wid, at, at, at, at) for _ in range(tasks_each))
            events.extend((new_id(), wid, at) for _ in range(events_each))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, started_at,"
            " completed_at, success, metadata, instance_id, last_updated)"
            " VALUES (?, ?, 'completed', ?, ?, ?, 1, '{}', 'bench', ?)",
            wf,
        )
        conn.executemany(
            "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, started_at,"
            " completed_at, success, logs, retry_count, execution_order, instance_id, last_updated)"
            " VALUES (?, ?, 'build', 'completed', ?, ?, ?, 1, '[]', 0, 1, 'bench', ?)",
            tasks,
        )
        conn.executemany(
            "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp, data, instance_id)"
            " VALUES (?, ?, 'workflow_completed', 'done', ?, '{}', 'bench')",
            events,
        )
        conn.execute("COMMIT")
        made += count
        print(f"\rbuilt {made}/{workflows} workflows", end="", file=sys.stderr, flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    partial.rename(db)
    print(f"\nbuilt {db} in {time.monotonic() - started:.0f} s", file=sys.stderr)


def copy(db: Path, suffix: str) -> Path:
    """A fresh copy of the built file to prune (the built one stays for the next run)."""
    target = db.with_name(f"{db.stem}-{suffix}.db")
    remove(target)
    shutil.copyfile(db, target)
    target.chmod(0o600)  # as the writer keeps its files
    return target


def remove(db: Path) -> None:
    """Remove a working copy and its -wal and -shm (each copy is as big as the built file)."""
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)


def chunked(db: Path) -> list[float]:
    """Prune the copy chunk by chunk, as the writer does; each chunk's seconds."""
    conn = open_write_connection(db)
    # The writer's checkpoints: its own thread, and SQLite's only rarely (writer/checkpointer.py).
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_RESTART_PAGES}")
    checkpointer = Checkpointer(db, "NORMAL")
    now_us = time.time_ns() // 1000
    conn.execute("BEGIN IMMEDIATE")
    retention.record_prune(
        conn,
        {
            "id": new_id(),
            "older_than_us": now_us - 30 * DAY_US,
            "statuses": ["cancelled", "completed", "failed"],
            "instance_id": "prune-chunks",
            "now": timestamps.format_us(now_us),
        },
    )
    conn.execute("COMMIT")
    job = retention.unfinished_job(conn)
    assert job is not None
    took: list[float] = []
    while True:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        result = retention.prune_chunk(conn, job, time.time_ns() // 1000)
        conn.execute("COMMIT")
        took.append(time.perf_counter() - started)
        checkpointer.committed()
        if result.finished:
            break
    row = conn.execute(
        "SELECT workflow_executions, task_executions, audit_events, chunks FROM prune_jobs WHERE id = ?",
        (job.id,),
    ).fetchone()
    print(f"deleted {row[0]} workflows, {row[1]} tasks, {row[2]} audit events in {row[3]} chunks")
    checkpointer.stop()
    conn.close()
    return took


def one_transaction(db: Path) -> float:
    """The old prune: the three DELETEs in one transaction; its seconds."""
    conn = open_write_connection(db)
    cutoff = timestamps.format_us(time.time_ns() // 1000 - 30 * DAY_US)
    doomed = (
        "SELECT id FROM workflow_executions"
        " WHERE created_at < ? AND status IN ('cancelled', 'completed', 'failed')"
    )
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DELETE FROM audit_events WHERE workflow_id IN ({doomed})", (cutoff,))
    conn.execute(f"DELETE FROM task_executions WHERE workflow_id IN ({doomed})", (cutoff,))
    conn.execute(f"DELETE FROM workflow_executions WHERE id IN ({doomed})", (cutoff,))
    conn.execute("COMMIT")
    took = time.perf_counter() - started
    conn.close()
    return took


def main() -> int:
    """Build if needed, prune a copy in chunks, print the durations."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=1, help="tasks per workflow")
    parser.add_argument("--events", type=int, default=1, help="audit events per workflow")
    parser.add_argument("--db", type=Path, default=None, help="where the built file is kept")
    parser.add_argument("--one-transaction", action="store_true", help="time the old single DELETE too")
    args = parser.parse_args()
    shape = "" if (args.tasks, args.events) == (1, 1) else f"-{args.tasks}t{args.events}e"
    db = args.db or Path(f"/tmp/see-prune-chunks-{args.workflows}{shape}.db")
    if not db.exists():
        build(db, args.workflows, args.tasks, args.events)
    work = copy(db, "chunked")
    try:
        took = sorted(chunked(work))
    finally:
        remove(work)
    ms = [t * 1000 for t in took]
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    print(
        f"chunks of {retention.CHUNK_WORKFLOWS} workflows / {retention.CHUNK_ROWS} rows: {len(ms)} chunks,"
        f" median {statistics.median(ms):.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms,"
        f" max {ms[-1]:.1f} ms, total {sum(took):.1f} s"
    )
    if args.one_transaction:
        single = copy(db, "single")
        try:
            print(f"one transaction (the old prune): {one_transaction(single):.1f} s")
        finally:
            remove(single)
    return 0


if __name__ == "__main__":
    sys.exit(main())
