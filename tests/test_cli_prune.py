"""prune as a real process: --dry-run counts, the writer deletes, active workflows are refused."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest
import zmq
from cli_support import assert_one_line_error, cli, counts, make_unwritten_db
from conftest import hello_op, old_workflow_ops, wait_until

from see_persistence import Reader, locations
from see_persistence.protocol import codec

DAY_US = 86_400 * 1_000_000
OLD_STATUSES = ("completed", "completed", "failed", "cancelled", "running", "pending")


def _record_old_workflows(db) -> list[str]:
    """Send workflows stamped 40 days ago straight to the writer's socket; their ids."""
    old_us = time.time_ns() // 1000 - 40 * DAY_US
    ids = [f"old-{n}-{status}" for n, status in enumerate(OLD_STATUSES)]
    ops = [
        op
        for wid, status in zip(ids, OLD_STATUSES, strict=True)
        for op in old_workflow_ops(wid, status, old_us)
    ]
    context = zmq.Context()
    try:
        sock = context.socket(zmq.PUSH)
        sock.connect(locations.endpoints_for(db).pull)
        sock.send(codec.encode_message("old-instance", 1, [hello_op(), *ops]))
        sock.close(linger=5000)
    finally:
        context.term()
    return ids


@pytest.fixture
def aged(db, writers, clients):
    """A database with six old workflows (four finished) and two recent completed ones."""
    writer = writers(db)
    writer.wait_holding_lease()
    old = _record_old_workflows(db)
    recent = clients(db, "--label", "recent", "--workflows", "2", "--tasks", "1").finish()["workflow_ids"]
    wait_until(lambda: counts(db)["workflow_executions"] == 8, 20, "the old and the recent workflows")
    return db, writer, old, recent


def test_dry_run_counts_and_changes_nothing_then_prune_deletes(aged):
    db, _, old, recent = aged
    before = counts(db)
    dry = cli("prune", "--db", db, "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 4 workflows" in dry.stdout and "with 4 tasks and 4 audit events" in dry.stdout
    only_completed = cli(
        "prune", "--db", db, "--older-than", "30d", "--dry-run", "--status", "completed", "--json"
    )
    assert json.loads(only_completed.stdout)["workflow_executions"] == 2
    assert counts(db) == before

    result = cli("prune", "--db", db, "--older-than", "30d", "--status", "completed,failed", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["workflow_executions"], report["task_executions"], report["audit_events"]) == (3, 3, 3)
    assert report["dry_run"] is False and report["statuses"] == ["completed", "failed"]
    with Reader(db) as reader:
        remaining = {w.id for w in reader.list_workflows()}
        event = reader.get_audit_event(report["report_event"])
    assert remaining == {old[3], old[4], old[5], *recent}  # cancelled, running, pending, and the recent
    assert event is not None and event.event_type == "prune"

    text = cli("prune", "--db", db, "--older-than", "30d")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("deleted 1 workflows") and "1 tasks and 1 audit events" in text.stdout


@pytest.mark.parametrize("statuses", ["running", "pending", "completed,running"])
def test_pruning_active_workflows_is_a_usage_error(aged, statuses):
    db, _, _, _ = aged
    before = counts(db)
    for extra in ([], ["--dry-run"]):
        result = cli("prune", "--db", db, "--older-than", "1d", "--status", statuses, *extra)
        assert_one_line_error(result, 2, "never pruned")
    assert counts(db) == before
    with Reader(db) as reader:
        assert reader.query("SELECT COUNT(*) FROM audit_events WHERE event_type = 'prune'") == [(0,)]


def test_prune_without_a_writer_says_none_is_running(tmp_path):
    db = tmp_path / "workflows.db"
    make_unwritten_db(db)
    started = time.monotonic()
    result = cli("prune", "--db", db, "--older-than", "30d", "--timeout", "30")
    assert_one_line_error(result, 1, "no writer is running")
    assert time.monotonic() - started < 20  # it did not wait out the timeout for nobody
    assert cli("prune", "--db", db, "--older-than", "30d", "--dry-run").returncode == 0


def test_prune_that_no_writer_confirms_in_time_fails(aged):
    db, writer, _, _ = aged
    writer.signal(signal.SIGSTOP)  # alive, holding the lease, and committing nothing
    try:
        result = cli("prune", "--db", db, "--older-than", "30d", "--timeout", "1")
    finally:
        writer.signal(signal.SIGCONT)
    assert_one_line_error(result, 1, "no writer is running", "1 s")


@pytest.mark.parametrize("age", ["30", "thirty days", "-1d", "5y", ""])
def test_a_bad_age_is_a_usage_error(tmp_path, age):
    db = tmp_path / "workflows.db"
    make_unwritten_db(db)
    assert_one_line_error(cli("prune", "--db", db, "--older-than", age), 2, "--older-than")


def test_a_prune_the_writer_cannot_carry_out_is_given_up_and_the_command_says_why(aged):
    # Another program's trigger refuses every delete: the writer gives the job up after a few
    # chunks (rather than retry it for ever) and the command reports its reason.
    db, writer, _, _ = aged
    other_program = sqlite3.connect(db, isolation_level=None)
    other_program.execute(
        "CREATE TRIGGER keep_everything BEFORE DELETE ON workflow_executions"
        " BEGIN SELECT json('this is not JSON'); END"
    )
    other_program.close()
    result = cli("prune", "--db", db, "--older-than", "30d", "--timeout", "90", timeout=120)
    assert_one_line_error(result, 1, "gave the prune up", "malformed JSON")
    assert counts(db)["workflow_executions"] == 8
    assert writer.process.poll() is None  # the writer goes on serving
    assert Reader(db).query("SELECT state FROM prune_jobs") == [("failed",)]
