"""Retention: prune deletes whole finished workflows, in order with everything else."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import zmq
from conftest import hello_op, old_workflow_ops, wait_until

from see_persistence import CallerError, Client, Reader, Status, locations
from see_persistence.protocol import codec

DAY_US = 86_400 * 1_000_000


def test_prune_deletes_old_finished_workflows_with_their_tasks_and_events(db, writers):
    writers(db).wait_holding_lease()
    old_us = time.time_ns() // 1000 - 40 * DAY_US
    ops = []
    for n in range(3):
        for status in ("completed", "failed", "cancelled", "running", "pending"):
            ops += old_workflow_ops(f"old-{status}-{n}", status, old_us)
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    sock.connect(locations.endpoints_for(db).pull)
    sock.send(codec.encode_message("old-instance", 1, [hello_op(), *ops]))
    reader = Reader(db)
    wait_until(lambda: reader.count_rows()["workflow_executions"] == 15, 20, "the old workflows")
    with Client(db) as client:
        recent = client.create_workflow("recent")
        client.update_workflow_status(recent, "completed")
        report_id = client.prune(timedelta(days=30), statuses=["completed", "failed"])
        assert client.flush(timeout=20)
    # The flush confirms the prune's job; the writer deletes in chunks after, then reports.
    report = wait_until(lambda: reader.get_audit_event(report_id), 20, "the prune's report")
    assert report.event_type == "prune"
    assert report.data["workflow_executions"] == 6
    assert report.data["task_executions"] == 6 and report.data["audit_events"] == 6
    remaining = {w.id for w in reader.list_workflows(limit=100)}
    assert recent in remaining
    for n in range(3):
        assert f"old-completed-{n}" not in remaining and f"old-failed-{n}" not in remaining
        for kept in ("cancelled", "running", "pending"):
            assert f"old-{kept}-{n}" in remaining
            assert len(reader.get_tasks_for_workflow(f"old-{kept}-{n}")) == 1
    assert reader.query("SELECT COUNT(*) FROM task_executions WHERE workflow_id LIKE 'old-completed-%'") == [
        (0,)
    ]
    assert reader.get_workflow("old-running-0").status == Status.RUNNING
    sock.close()
    context.term()


def test_prune_refuses_active_statuses_in_the_caller(db):
    with Client(db) as client:
        with pytest.raises(CallerError, match="never pruned"):
            client.prune(60, statuses=["running"])
        with pytest.raises(CallerError, match="older_than"):
            client.prune(-1)
        client.close(timeout=0.1)
