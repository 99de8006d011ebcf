"""What one batch of appends to a task's log costs at line N: this writer against the seed's way.

ours: the writer's own `apply_messages` on a file (no sockets, no other processes), one
message of k appends to one task per transaction, with the bounded `logs` column and the
`task_log_lines` table past it (protocol/task_logs.py). seed: the seed's statement, which
rewrites the whole JSON array for every line (statements.INSERTS["append_task_log"]), k of them
in one transaction. Lines are 100 characters. For each cell: the median over the repetitions
of the commit's wall time (BEGIN to COMMIT) and of the WAL pages it wrote, and the Reader's
time to return the whole log once.

    .venv/bin/python tools/bench_task_logs.py [--lines 100,1000,10000,100000] [--batch 1,100,1000]

Seconds on a shared machine drift: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from see_persistence import Reader, leases
from see_persistence.protocol import codec, statements, task_logs
from see_persistence.writer import storage
from see_persistence.writer.batch import SequenceBook, apply_messages

LINE = "x" * 100
INSTANCE = "bench-task-logs"
WORKFLOW = "0190a0a0-0000-7000-8000-00000000f100"
TASK = "0190a0a0-0000-7000-8000-00000000a5c0"
FILL_PER_MESSAGE = 4000
SEED_BUDGET_BYTES = 2_000_000_000  # skip a seed cell that would rewrite more column than this


def _now_us() -> int:
    return time.time_ns() // 1000


def _append(line: str) -> tuple[str, dict[str, Any]]:
    return ("append_task_log", {"id": TASK, "line": line, "at_us": _now_us()})


class Ours:
    """A fresh file, one task, batches applied as the writer applies them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = storage.open_write_connection(path)
        storage.upgrade_schema(self.conn, _now_us())
        self.book = SequenceBook()
        self.seq = 0
        me = leases.current_process()
        hello = {"pid": me.pid, "process_create_time": me.create_time, "host": me.host, "at_us": _now_us()}
        self.batch(
            [
                ("hello", hello),
                (
                    "create_workflow",
                    {"id": WORKFLOW, "workflow_name": "w", "metadata": "{}", "at_us": _now_us()},
                ),
                (
                    "create_task",
                    {
                        "id": TASK,
                        "workflow_id": WORKFLOW,
                        "task_name": "t",
                        "execution_order": 1,
                        "at_us": _now_us(),
                    },
                ),
            ]
        )

    def batch(self, ops: list[tuple[str, dict[str, Any]]]) -> float:
        """Apply one message in one transaction; return its seconds."""
        self.seq += 1
        raw = codec.encode_message(INSTANCE, self.seq, ops)
        started = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        result = apply_messages(self.conn, [raw], self.book, now_us=_now_us())
        self.conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        self.book.commit(result.committed_seq, result.rejected_total, registered=result.registered)
        if result.dead_letters:
            raise SystemExit(f"bench_task_logs: {result.dead_letters} dead letters: the workload is broken")
        return seconds

    def fill(self, lines: int) -> None:
        for start in range(0, lines, FILL_PER_MESSAGE):
            self.batch([_append(LINE)] * min(FILL_PER_MESSAGE, lines - start))

    def close(self) -> None:
        self.conn.close()


def _wal_pages(conn: Any, path: Path) -> int:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return max(os.path.getsize(f"{path}-wal") - 32, 0) // (page_size + 24)


def _checkpoint(conn: Any) -> None:
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    if busy:
        raise SystemExit("bench_task_logs: the checkpoint was blocked")


def measure_ours(tmp: Path, lines: int, batch: int, repeat: int) -> dict[str, float]:
    """Median seconds and WAL pages of a batch of `batch` appends at line `lines`, and the read."""
    ours = Ours(tmp / f"ours-{lines}-{batch}.db")
    ours.fill(lines)
    seconds, pages = [], []
    for _ in range(repeat):
        _checkpoint(ours.conn)
        seconds.append(ours.batch([_append(LINE)] * batch))
        pages.append(_wal_pages(ours.conn, ours.path))
    column = ours.conn.execute("SELECT length(logs) FROM task_executions WHERE id = ?", (TASK,)).fetchone()[0]
    ours.close()
    with Reader(ours.path) as reader:
        started = time.perf_counter()
        [task] = reader.get_tasks_for_workflow(WORKFLOW)
        read = time.perf_counter() - started
    expected = lines + repeat * batch
    if len(task.logs) != expected:
        raise SystemExit(f"bench_task_logs: the Reader returned {len(task.logs)} lines, not {expected}")
    return {
        "ms": statistics.median(seconds) * 1e3,
        "pages": statistics.median(pages),
        "column": column,
        "read_ms": read * 1e3,
    }


def measure_seed(tmp: Path, lines: int, batch: int, repeat: int) -> dict[str, float] | None:
    """The same with the seed's statement: each append rewrites the whole column."""
    if (lines + batch * repeat) * (len(LINE) + 3) * batch * repeat > SEED_BUDGET_BYTES:
        return None
    path = tmp / f"seed-{lines}-{batch}.db"
    ours = Ours(path)  # the same tables and rows; then the seed's statement, straight on them
    ours.conn.execute(
        "UPDATE task_executions SET logs = ? WHERE id = ?",
        (json.dumps([LINE] * lines, separators=(",", ":")), TASK),
    )
    sql = statements.INSERTS["append_task_log"]
    seconds, pages = [], []
    for _ in range(repeat):
        _checkpoint(ours.conn)
        params = [{"id": TASK, "line": LINE, "now": "2026-01-01T00:00:00.000000+00:00"}] * batch
        started = time.perf_counter()
        ours.conn.execute("BEGIN IMMEDIATE")
        ours.conn.executemany(sql, params)
        ours.conn.execute("COMMIT")
        seconds.append(time.perf_counter() - started)
        pages.append(_wal_pages(ours.conn, path))
    ours.close()
    return {"ms": statistics.median(seconds) * 1e3, "pages": statistics.median(pages)}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> int:
    """Measure every (lines, batch) cell and print one markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=_ints, default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--batch", type=_ints, default=[1, 100, 1_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"column bound: {task_logs.LOG_COLUMN_MAX_BYTES} bytes; lines of {len(LINE)} characters")
    print()
    print("| log at line | appends per batch | ours: ms per batch | ours: WAL pages | column bytes after"
          " | Reader: whole log ms | seed: ms per batch | seed: WAL pages |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="see-bench-logs-") as tmp:
        for lines in args.lines:
            for batch in args.batch:
                ours = measure_ours(Path(tmp), lines, batch, args.repeat)
                seed = measure_seed(Path(tmp), lines, batch, args.repeat)
                seed_cells = (
                    "skipped | skipped" if seed is None else f"{seed['ms']:.3f} | {seed['pages']:.0f}"
                )
                print(
                    f"| {lines:,} | {batch:,} | {ours['ms']:.3f} | {ours['pages']:.0f} | {ours['column']:,}"
                    f" | {ours['read_ms']:.1f} | {seed_cells} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
