"""Prune jobs carried out in chunks (writer/retention.py), on plain sqlite3 connections."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from see_persistence.protocol import schema, statements, timestamps
from see_persistence.writer import retention
from see_persistence.writer.storage import upgrade_schema

pytestmark = pytest.mark.unit

DAY_US = 86_400 * 1_000_000
NOW_US = 1_800_000_000_000_000
OLD = timestamps.format_us(NOW_US - 40 * DAY_US)
RECENT = timestamps.format_us(NOW_US - DAY_US)
FINISHED = ["cancelled", "completed", "failed"]


def _database(path: Path | str = ":memory:") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")  # as the writer's connection has it
    upgrade_schema(conn, NOW_US)
    return conn


def _workflow(conn: sqlite3.Connection, wid: str, status: str, created: str, tasks: int, events: int) -> None:
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata)"
        " VALUES (?, ?, ?, ?, '{}')",
        (wid, wid, status, created),
    )
    conn.executemany(
        "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, logs)"
        " VALUES (?, ?, 't', 'completed', ?, '[]')",
        [(f"{wid}-t{n}", wid, created) for n in range(tasks)],
    )
    conn.executemany(
        "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp, data)"
        " VALUES (?, ?, 'x', 'm', ?, '{}')",
        [(f"{wid}-e{n}", wid, created) for n in range(events)],
    )


def _record(conn: sqlite3.Connection, job_id: str = "job-1", statuses: list[str] | None = None) -> None:
    retention.record_prune(
        conn,
        {
            "id": job_id,
            "older_than_us": NOW_US - 30 * DAY_US,
            "statuses": statuses or FINISHED,
            "instance_id": "inst-1",
            "now": timestamps.format_us(NOW_US),
        },
    )


def _count(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def _run_to_the_end(conn: sqlite3.Connection, workflows: int, rows: int) -> int:
    """Chunks, each in its own transaction, until the job is finished; how many it took."""
    chunks = 0
    while True:
        job = retention.unfinished_job(conn)
        if job is None:
            return chunks
        conn.execute("BEGIN IMMEDIATE")
        retention.prune_chunk(conn, job, NOW_US, workflows, rows)
        conn.execute("COMMIT")
        chunks += 1
        assert chunks < 10_000


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = _database()
    yield connection
    connection.close()


def test_chunks_delete_what_the_prune_names_and_the_report_adds_up(conn: sqlite3.Connection) -> None:
    for n in range(30):
        _workflow(conn, f"old-done-{n}", FINISHED[n % 3], OLD, tasks=3, events=5)
    for status in ("running", "pending"):
        _workflow(conn, f"old-{status}", status, OLD, tasks=2, events=2)
    _workflow(conn, "recent-done", "completed", RECENT, tasks=2, events=2)
    _record(conn)

    chunks = _run_to_the_end(conn, workflows=4, rows=7)

    assert chunks > 30 // 4  # bounded chunks: many of them
    report = json.loads(conn.execute("SELECT data FROM audit_events WHERE id = 'job-1'").fetchone()[0])
    assert report == {
        "workflow_executions": 30,
        "task_executions": 90,
        "audit_events": 150,
        "older_than": timestamps.format_us(NOW_US - 30 * DAY_US),
        "statuses": FINISHED,
    }
    assert _count(conn, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'prune'") == 1
    kept = {row[0] for row in conn.execute("SELECT id FROM workflow_executions")}
    assert kept == {"old-running", "old-pending", "recent-done"}
    assert _count(conn, "SELECT COUNT(*) FROM task_executions") == 6
    assert _count(conn, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'x'") == 6
    job = conn.execute(
        "SELECT state, workflow_executions, task_executions, audit_events, chunks, finished_at"
        " FROM prune_jobs WHERE id = 'job-1'"
    ).fetchone()
    assert job == ("finished", 30, 90, 150, chunks, timestamps.format_us(NOW_US))


def test_a_chunk_never_deletes_more_rows_than_its_budget(conn: sqlite3.Connection) -> None:
    _workflow(conn, "big", "completed", OLD, tasks=40, events=60)
    _record(conn)
    job = retention.unfinished_job(conn)
    assert job is not None
    seen = []
    while True:
        result = retention.prune_chunk(conn, job, NOW_US, workflows=10, rows=25)
        seen.append(result.counts)
        assert sum(result.counts.values()) <= 25 + 10  # the budget, and the chunk's own workflows
        if result.finished:
            break
    assert seen[-1]["workflow_executions"] == 1  # the workflow goes once nothing of it is left
    assert all(counts["workflow_executions"] == 0 for counts in seen[:-1])
    assert _count(conn, "SELECT COUNT(*) FROM task_executions") == 0


def test_a_chunk_rolled_back_leaves_the_job_as_it_was(conn: sqlite3.Connection) -> None:
    """A writer killed inside a chunk: the next one finds the rows and the counts as before it."""
    for n in range(10):
        _workflow(conn, f"old-{n}", "completed", OLD, tasks=1, events=1)
    _record(conn)
    job = retention.unfinished_job(conn)
    assert job is not None
    conn.execute("BEGIN IMMEDIATE")
    retention.prune_chunk(conn, job, NOW_US, workflows=3, rows=100)
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    retention.prune_chunk(conn, job, NOW_US, workflows=3, rows=100)
    conn.execute("ROLLBACK")
    resumed = retention.unfinished_job(conn)
    assert resumed is not None
    assert resumed.counts == {"workflow_executions": 3, "task_executions": 3, "audit_events": 3}
    assert resumed.chunks == 1
    _run_to_the_end(conn, workflows=3, rows=100)
    data = json.loads(conn.execute("SELECT data FROM audit_events WHERE id = 'job-1'").fetchone()[0])
    assert (data["workflow_executions"], data["task_executions"], data["audit_events"]) == (10, 10, 10)


def test_a_prune_with_nothing_to_delete_reports_zeros_at_once(conn: sqlite3.Connection) -> None:
    _workflow(conn, "recent", "completed", RECENT, tasks=1, events=1)
    _record(conn, statuses=["completed"])
    job = retention.unfinished_job(conn)
    assert job is not None
    assert retention.prune_chunk(conn, job, NOW_US).finished
    assert retention.unfinished_job(conn) is None
    data = json.loads(conn.execute("SELECT data FROM audit_events WHERE id = 'job-1'").fetchone()[0])
    assert data["workflow_executions"] == 0 and data["statuses"] == ["completed"]


def test_jobs_are_taken_oldest_first_and_a_second_with_the_same_id_is_refused(
    conn: sqlite3.Connection,
) -> None:
    _record(conn, "job-a")
    _record(conn, "job-b")
    job = retention.unfinished_job(conn)
    assert job is not None and job.id == "job-a" and job.instance_id == "inst-1"
    with pytest.raises(sqlite3.IntegrityError):
        _record(conn, "job-a")


def test_a_tasks_log_lines_go_before_it_within_the_budget(conn: sqlite3.Connection) -> None:
    """task_log_lines, through the one place for rows keyed by task id (PRUNE_TASK_CHILD_DELETES).

    Their foreign key would cascade, unbounded: a chunk deletes them first, within its budget.
    """
    _workflow(conn, "old", "completed", OLD, tasks=2, events=1)
    _workflow(conn, "old-running", "running", OLD, tasks=1, events=0)
    for task in ("old-t0", "old-t1", "old-running-t0"):
        conn.executemany(
            "INSERT INTO task_log_lines (task_id, line_no, line) VALUES (?, ?, ?)",
            [(task, n, f"l{n}") for n in range(5)],
        )
    _record(conn)
    job = retention.unfinished_job(conn)
    assert job is not None
    while True:
        result = retention.prune_chunk(conn, job, NOW_US, workflows=1, rows=3)
        left = _count(conn, "SELECT COUNT(*) FROM task_log_lines WHERE task_id LIKE 'old-t%'")
        assert left == 0 or _count(conn, "SELECT COUNT(*) FROM task_executions WHERE id LIKE 'old-t%'") == 2
        if result.finished:
            break
    assert conn.execute("SELECT DISTINCT task_id FROM task_log_lines").fetchall() == [("old-running-t0",)]
    assert _count(conn, "SELECT task_executions FROM prune_jobs") == 2
    assert "task_log_lines" in [table for table, _ in statements.PRUNE_CHILD_DELETES]


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (statements.prune_chunk_workflows(3), "idx_see_workflow_executions_status_created"),
        (statements.delete_children_of_workflows("audit_events"), "idx_audit_events_workflow_id"),
        (statements.delete_children_of_workflows("task_executions"), "idx_task_executions_workflow_id"),
        (statements.PRUNE_WORKFLOWS, "sqlite_autoindex_workflow_executions_1"),
        (dict(statements.PRUNE_CHILD_DELETES)["task_log_lines"], "PRIMARY KEY (task_id=?)"),
        (statements.UNFINISHED_PRUNE_JOB, "idx_see_prune_jobs_running"),
    ],
)
def test_each_statement_of_a_chunk_is_served_by_an_index(
    conn: sqlite3.Connection, sql: str, index: str
) -> None:
    """No chunk reads a whole table: at 1M workflows each one must stay milliseconds."""
    params = (None,) * sql.count("?")
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert any(index in step for step in plan), plan
    big_tables = ("workflow_executions", "task_executions", "audit_events")
    assert not any(step.startswith(f"SCAN {table}") for step in plan for table in big_tables), plan


def test_prune_jobs_are_part_of_the_schema() -> None:
    assert "prune_jobs" in schema.LAYER_TABLE_NAMES
    assert any(
        "prune_jobs" in statement for statement in schema.upgrade_statements(5)  # version 6 added it
    )


# -- the runner, as the writer's loop drives it ------------------------------------------------


class _Incoming:
    """Stands for the writer's PULL socket: says whether messages wait."""

    def __init__(self) -> None:
        self.waiting = False

    def poll(self, timeout: int | None = None) -> int:
        return int(self.waiting)


def _runner(conn: sqlite3.Connection, incoming: _Incoming) -> tuple[retention.PruneRunner, list[int]]:
    commits: list[int] = []

    @contextmanager
    def transaction(now_us: int) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        commits.append(now_us)

    runner = retention.PruneRunner(conn, transaction, incoming, threading.Event(), lambda: None)
    runner.workflows, runner.rows = 2, 100  # small chunks: many of them
    return runner, commits


def test_the_runner_takes_one_chunk_per_turn_while_messages_wait_and_many_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle turn's chunks run back to back while each is fast and the slice lasts: a loaded
    # machine must not make a 1 ms chunk look slow, or the slice end, before the second one.
    monkeypatch.setattr(retention, "CHUNK_SLOW_S", 60.0)
    monkeypatch.setattr(retention, "IDLE_SLICE_S", 60.0)
    conn = _database(tmp_path / "wf.db")
    for n in range(20):
        _workflow(conn, f"old-{n}", "completed", OLD, tasks=1, events=1)
    _record(conn)
    incoming = _Incoming()
    runner, commits = _runner(conn, incoming)
    runner._adapt = lambda took_s: None  # type: ignore[method-assign]  # keep the sizes set above
    incoming.waiting = True
    runner.run()
    assert len(commits) == 1 and runner.active
    runner.run()  # at once again: too soon while messages wait
    assert len(commits) == 1
    incoming.waiting = False
    runner._not_before = 0.0
    runner.run()
    assert len(commits) > 2
    while runner.active:
        runner._not_before = 0.0
        runner.run()
    assert _count(conn, "SELECT COUNT(*) FROM workflow_executions") == 0
    assert _count(conn, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'prune'") == 1
    conn.close()


def test_a_new_runner_goes_on_with_the_job_another_left(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    conn = _database(path)
    for n in range(10):
        _workflow(conn, f"old-{n}", "completed", OLD, tasks=2, events=1)
    _record(conn)
    first, _ = _runner(conn, _Incoming())
    first._adapt = lambda took_s: None  # type: ignore[method-assign]
    first._incoming.waiting = True  # type: ignore[attr-defined]
    first.run()  # one chunk, then the writer "dies"
    conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    second, _ = _runner(conn, _Incoming())
    while True:
        second.run()
        second._not_before = 0.0
        if retention.unfinished_job(conn) is None:
            break
    data = json.loads(conn.execute("SELECT data FROM audit_events WHERE id = 'job-1'").fetchone()[0])
    assert (data["workflow_executions"], data["task_executions"], data["audit_events"]) == (10, 20, 10)
    conn.close()


def test_a_slow_chunk_halves_the_next_and_fast_ones_grow_them_back(conn: sqlite3.Connection) -> None:
    runner, _ = _runner(conn, _Incoming())
    runner.workflows, runner.rows = retention.CHUNK_WORKFLOWS, retention.CHUNK_ROWS
    runner._adapt(retention.CHUNK_SLOW_S * 2)
    assert (runner.workflows, runner.rows) == (retention.CHUNK_WORKFLOWS // 2, retention.CHUNK_ROWS // 2)
    for _ in range(20):
        runner._adapt(retention.CHUNK_SLOW_S * 2)
    assert (runner.workflows, runner.rows) == (retention.CHUNK_MIN_WORKFLOWS, retention.CHUNK_MIN_ROWS)
    for _ in range(20):
        runner._adapt(0.0)
    assert (runner.workflows, runner.rows) == (retention.CHUNK_WORKFLOWS, retention.CHUNK_ROWS)


def test_the_idle_slice_ends_after_a_slow_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that overran must be followed by the loop (which stands aside), not by more chunks."""
    conn = _database(tmp_path / "wf.db")
    for n in range(10):
        _workflow(conn, f"old-{n}", "completed", OLD, tasks=1, events=1)
    _record(conn)
    runner, commits = _runner(conn, _Incoming())
    monkeypatch.setattr(retention, "CHUNK_SLOW_S", -1.0)  # every chunk counts as slow
    runner.run()
    assert len(commits) == 1 and runner.active
    conn.close()


def test_a_job_whose_chunks_keep_failing_for_what_they_delete_is_given_up_with_the_reason(
    tmp_path: Path,
) -> None:
    # Another program's trigger refuses the deletes (not a fault of the database): retried for
    # ever, the job would hold the writer's chunks back for good. It is given up, with why.
    conn = _database(tmp_path / "wf.db")
    for n in range(4):
        _workflow(conn, f"old-{n}", "completed", OLD, tasks=1, events=1)
    conn.execute(
        "CREATE TRIGGER keep_old BEFORE DELETE ON workflow_executions"
        " BEGIN SELECT json('this is not JSON'); END"
    )
    _record(conn)
    runner, commits = _runner(conn, _Incoming())
    for _ in range(retention.CHUNK_ATTEMPTS + 1):
        runner._not_before = 0.0
        runner.run()
    state, error = conn.execute("SELECT state, error FROM prune_jobs WHERE id = 'job-1'").fetchone()
    assert state == "failed" and "malformed JSON" in error and f"{retention.CHUNK_ATTEMPTS} chunks" in error
    assert not runner.active and retention.unfinished_job(conn) is None
    assert _count(conn, "SELECT COUNT(*) FROM workflow_executions") == 4  # nothing half-deleted
    assert len(commits) == 1  # only the transaction that gave the job up
    conn.close()
