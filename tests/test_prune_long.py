"""A prune too big for one transaction, with real writer, client and command processes.

Issue 13: a prune over 1,000,000 old workflows ran as one transaction of 10.5 s, past the
lease's stale limit: the writer rolled it back and fenced itself off (exit 4), and so did
every writer after it, while none of a GUI's records was committed. (A writer now stands aside
after such an overrun instead, but a transaction that long still stalls every other writer of
the file and lets a standby take over.) Here the writer runs with a stale limit shortened to
1 s ($SEE_PERSISTENCE_TEST_LEASE_STALE_AFTER_S: transactions overrun after 0.8 s) over 600,000
rows to delete, which one transaction took 2.0 to 2.6 s to here (the old three DELETEs, on a
copy of the template below, beside other processes); in chunks of about 10 ms the writer never
comes near the limit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, stop_writer
from conftest import wait_until

from see_persistence import Reader
from see_persistence.commands.writer import STALE_LIMIT_ENV
from see_persistence.protocol import timestamps
from see_persistence.writer.storage import upgrade_schema

pytestmark = pytest.mark.slow

DAY_US = 86_400 * 1_000_000
OLD_WORKFLOWS = 120_000  # each with 2 tasks and 2 audit events: 600,000 rows to delete
# The takeover tests need a prune of many chunks (retention.CHUNK_WORKFLOWS each) that a kill
# lands in the middle of, not one too big for a transaction: 60 chunks, a quarter of the rows.
TAKEOVER_OLD_WORKFLOWS = 30_000
KEPT = 20  # old running ones, and recent finished ones: never pruned
EXIT_STILL_RUNNING = 5


def _build_template(path: Path, old_workflows: int) -> Path:
    """A file with the writer's schema and `old_workflows` old finished workflows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    now_us = time.time_ns() // 1000
    upgrade_schema(conn, now_us)
    statuses = ("completed", "failed", "cancelled")
    conn.execute("BEGIN")
    # The workflows once from Python; their tasks and events copied from them in SQL (half the time).
    conn.execute("CREATE TEMP TABLE old (n INTEGER PRIMARY KEY, id TEXT, status TEXT, at TEXT)")
    conn.executemany(
        "INSERT INTO old VALUES (?, ?, ?, ?)",
        (
            (n, f"old-{n:06d}", statuses[n % 3], timestamps.format_us(now_us - 40 * DAY_US + n))
            for n in range(old_workflows)
        ),
    )
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata, instance_id)"
        " SELECT id, 'old', status, at, '{}', 'seed' FROM old ORDER BY n"
    )
    two = "(SELECT 0 AS k UNION ALL SELECT 1)"
    conn.execute(
        "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, logs, instance_id)"
        f" SELECT id || '-t' || k, id, 't', 'completed', at, '[]', 'seed' FROM old, {two} ORDER BY n, k"
    )
    conn.execute(
        "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp, data, instance_id)"
        f" SELECT id || '-e' || k, id, 'step', 'm', at, '{{}}', 'seed' FROM old, {two} ORDER BY n, k"
    )
    oldest = conn.execute("SELECT at FROM old WHERE n = 0").fetchone()[0]
    conn.execute("DROP TABLE old")
    recent = timestamps.format_us(now_us - DAY_US)
    conn.executemany(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata, instance_id)"
        " VALUES (?, 'kept', ?, ?, '{}', 'seed')",
        [(f"kept-running-{n}", "running", oldest) for n in range(KEPT // 2)]
        + [(f"kept-recent-{n}", "completed", recent) for n in range(KEPT // 2)],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with OLD_WORKFLOWS old finished workflows (built once)."""
    return _build_template(tmp_path_factory.mktemp("prune-template") / "template.db", OLD_WORKFLOWS)


@pytest.fixture(scope="module")
def takeover_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with TAKEOVER_OLD_WORKFLOWS old finished workflows (built once)."""
    path = tmp_path_factory.mktemp("prune-takeover-template") / "template.db"
    return _build_template(path, TAKEOVER_OLD_WORKFLOWS)


def _copy(template: Path, db: Path) -> Path:
    """A copy of `template` at the test's database path, owner-only as the writer keeps it."""
    shutil.copyfile(template, db)
    db.chmod(0o600)
    return db


@pytest.fixture
def big_db(template: Path, db: Path) -> Path:
    """The test's copy of the OLD_WORKFLOWS template."""
    return _copy(template, db)


@pytest.fixture
def takeover_db(takeover_template: Path, db: Path) -> Path:
    """The test's copy of the TAKEOVER_OLD_WORKFLOWS template."""
    return _copy(takeover_template, db)


def _start_prune(db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "prune", "--db", str(db), "--older-than", "30d", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _job(db: Path) -> tuple[str, int, int, int, int, str] | None:
    """(id, workflows, tasks, events, chunks, state) of the file's prune job, if there is one."""
    with Reader(db) as reader:
        rows = reader.query(
            "SELECT id, workflow_executions, task_executions, audit_events, chunks, state FROM prune_jobs"
        )
    assert len(rows) <= 1, rows
    return rows[0] if rows else None  # type: ignore[return-value]


def _under_way(db: Path, chunks: int) -> bool:
    job = _job(db)
    if job is not None and job[5] == "finished":
        raise AssertionError(f"the prune finished before the test could act: {job}")
    return job is not None and job[4] >= chunks


def _assert_pruned_once(db: Path, report_id: str, old_workflows: int = OLD_WORKFLOWS) -> None:
    """One report, with the totals of what was there; the job finished with the same counts."""
    with Reader(db) as reader:
        reports = reader.query("SELECT id, data FROM audit_events WHERE event_type = 'prune'")
        assert [row[0] for row in reports] == [report_id]
        data = json.loads(reports[0][1])
        totals = (data["workflow_executions"], data["task_executions"], data["audit_events"])
        assert totals == (old_workflows, 2 * old_workflows, 2 * old_workflows)
        assert reader.query(
            "SELECT workflow_executions, task_executions, audit_events, state FROM prune_jobs"
        ) == [(*totals, "finished")]
        assert reader.query("SELECT COUNT(*) FROM workflow_executions WHERE id LIKE 'old-%'") == [(0,)]
        assert reader.query("SELECT COUNT(*) FROM task_executions WHERE workflow_id LIKE 'old-%'") == [(0,)]
        assert reader.query("SELECT COUNT(*) FROM workflow_executions WHERE id LIKE 'kept-%'") == [(KEPT,)]


def test_a_prune_too_big_for_one_transaction_completes_while_a_client_keeps_committing(
    big_db, writers, clients
):
    writer = writers(big_db, env={**os.environ, STALE_LIMIT_ENV: "1"})
    writer.wait_holding_lease()
    client = clients(big_db, "--label", "during", "--workflows", "40", "--tasks", "2", "--wait-before-record")
    assert client.read_event()["phase"] == "started"
    prune = _start_prune(big_db, "--json", "--timeout", "100")
    try:
        wait_until(lambda: _under_way(big_db, chunks=2), 60, "the prune to be under way")
        client.proceed()  # a GUI's records, sent while the writer prunes
        report = client.finish()
        assert report["flushed"] is True, report
        out, err = prune.communicate(timeout=100)
    finally:
        prune.kill()
    assert prune.returncode == 0, err
    result = json.loads(out)
    assert result["finished"] is True
    _assert_pruned_once(big_db, result["report_event"])
    with Reader(big_db) as reader:
        mine = reader.get_workflows_for_instance(report["instance_id"])
        assert sorted(w.id for w in mine) == sorted(report["workflow_ids"])
        assert all(w.status == "completed" for w in mine)
    assert writer.process.poll() is None, writer.log()
    log = writer.log()
    assert "lease stale after 1 s" in log  # the shortened limit was in force
    # No transaction of the writer overran the 0.8 s limit (it would have stood aside), and it
    # never lost the lease.
    assert "others may presume it dead" not in log and "lost the writer lease" not in log, log
    stop_writer(writer)  # SIGTERM: exit 0, never 4


def test_a_writer_killed_mid_prune_leaves_the_job_to_the_next_which_reports_once(takeover_db, writers):
    first = writers(takeover_db)
    first.wait_holding_lease()
    prune = _start_prune(takeover_db, "--timeout", "6")
    try:
        wait_until(lambda: _under_way(takeover_db, chunks=3), 60, "the prune to be under way")
        first.signal(signal.SIGKILL)
        first.wait_exit()
        out, err = prune.communicate(timeout=60)
        result = subprocess.CompletedProcess(prune.args, prune.returncode, out, err)
    finally:
        prune.kill()
    # Nobody deletes now: the command's wait runs out, and it says how far the writer got.
    line = assert_one_line_error(result, EXIT_STILL_RUNNING, "still under way", "goes on")
    job = _job(takeover_db)
    assert job is not None and job[5] == "running" and 0 < job[1] < TAKEOVER_OLD_WORKFLOWS, job
    assert f"deleted {job[1]} workflows" in line
    with Reader(takeover_db) as reader:
        assert reader.get_audit_event(job[0]) is None  # no report until the job is done

    second = writers(takeover_db, "--standby")  # takes over at once: the holder is dead
    second.wait_holding_lease()
    wait_until(lambda: _job(takeover_db)[5] == "finished", 90, "the next writer to finish the job")
    _assert_pruned_once(takeover_db, job[0], TAKEOVER_OLD_WORKFLOWS)
    assert "resuming after" in second.log()
    stop_writer(second)


def test_the_command_waits_through_a_takeover_by_a_standby(takeover_db, writers):
    first = writers(takeover_db)
    first.wait_holding_lease()
    standby = writers(takeover_db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to stand by")
    prune = _start_prune(takeover_db, "--json", "--timeout", "100")
    try:
        wait_until(lambda: _under_way(takeover_db, chunks=3), 60, "the prune to be under way")
        first.signal(signal.SIGKILL)
        out, err = prune.communicate(timeout=100)
    finally:
        prune.kill()
    assert prune.returncode == 0, err
    result = json.loads(out)
    assert (result["workflow_executions"], result["task_executions"], result["audit_events"]) == (
        TAKEOVER_OLD_WORKFLOWS,
        2 * TAKEOVER_OLD_WORKFLOWS,
        2 * TAKEOVER_OLD_WORKFLOWS,
    )
    _assert_pruned_once(takeover_db, result["report_event"], TAKEOVER_OLD_WORKFLOWS)
    assert standby.process.poll() is None
    stop_writer(standby)
