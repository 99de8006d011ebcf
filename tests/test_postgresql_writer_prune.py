"""prune on PostgreSQL: the job recorded in its batch, deleted in chunks by the writer, reported once.

Real writer processes on the session's server; old records sent by a raw CURVE sender (their
times are the caller's, in 2023), the prune by a Client in this process, as on SQLite.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest
import test_postgresql_writer as pg_writer_tests
import zmq
from cli_support import cli
from conftest import wait_until
from test_postgresql_writer import (
    AT_US,
    Sender,
    append_log,
    audit_event,
    connect_curve,
    create_task,
    create_workflow,
    last_seq,
    query,
    wait_serving,
    workflow_status,
)

from see_persistence import Client, Reader

pytest.importorskip("psycopg")

# That module's fixtures, for the tests here to ask for by name.
tcp_env = pg_writer_tests.tcp_env
pg_writers = pg_writer_tests.pg_writers
zmq_context = pg_writer_tests.zmq_context


def _old_records(url: str, row, zmq_context, finished: int) -> tuple[list[str], str]:
    """`finished` completed workflows with a task, log lines and an event each, and one running."""
    sender = Sender()
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    done = []
    seq = 0
    for n in range(finished):
        wid, tid = str(uuid.uuid4()), str(uuid.uuid4())
        seq += 1
        push.send(
            sender.message(
                seq,
                create_workflow(wid),
                create_task(tid, wid),
                append_log(tid, f"line {n}"),
                audit_event(str(uuid.uuid4()), wid, "{}"),
                workflow_status(wid, "completed", AT_US + 5),
            )
        )
        done.append(wid)
    running = str(uuid.uuid4())
    seq += 1
    push.send(sender.message(seq, create_workflow(running), workflow_status(running, "running", AT_US + 1)))
    wait_until(lambda: last_seq(url, sender.instance_id) == seq, 30, "the old records to commit")
    push.close()
    return done, running


def _counts(url: str) -> tuple[int, int, int]:
    rows = query(
        url,
        "SELECT (SELECT COUNT(*) FROM workflow_executions), (SELECT COUNT(*) FROM task_executions),"
        " (SELECT COUNT(*) FROM audit_events WHERE event_type <> 'prune')",
    )
    return rows[0]  # type: ignore[return-value]


def test_a_prune_on_postgresql_deletes_finished_workflows_with_theirs_and_reports_once(
    postgres_url, pg_writers, zmq_context, tcp_env
):
    row = wait_serving(postgres_url, pg_writers(postgres_url))
    done, running = _old_records(postgres_url, row, zmq_context, finished=12)
    assert _counts(postgres_url) == (13, 12, 12)
    with Client(postgres_url) as client, Reader(postgres_url) as reader:
        report_id = client.prune("30d")
        assert client.flush(timeout=30)
        wait_until(lambda: reader.get_audit_event(report_id), 30, "the prune's report")
        report = reader.get_audit_event(report_id)
    assert report is not None and report.event_type == "prune"
    assert report.data["workflow_executions"] == 12
    assert report.data["task_executions"] == 12
    assert report.data["audit_events"] == 12
    assert report.data["older_than"].endswith("+00:00")
    assert _counts(postgres_url) == (1, 0, 0)
    assert query(postgres_url, "SELECT id, status FROM workflow_executions") == [(running, "running")]
    assert reader.get_workflow(done[0]) is None
    jobs = query(postgres_url, "SELECT state, workflow_executions, chunks >= 1 FROM prune_jobs")
    assert jobs == [("finished", 12, True)]
    assert query(postgres_url, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_an_unfinished_prune_job_is_taken_up_by_the_next_writer(
    postgres_url, pg_writers, zmq_context, tcp_env
):
    first = pg_writers(postgres_url)
    row = wait_serving(postgres_url, first)
    done, running = _old_records(postgres_url, row, zmq_context, finished=3)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    # A job as the batch that carried the prune records it, left unfinished by a writer that died.
    query(
        postgres_url,
        "INSERT INTO prune_jobs (id, older_than, statuses, instance_id, state, created_at)"
        " VALUES ('job-1', '2024-01-01T00:00:00+00:00', '[\"completed\"]', NULL, 'running', now())"
        " RETURNING id",
    )
    wait_serving(postgres_url, pg_writers(postgres_url))
    wait_until(
        lambda: query(postgres_url, "SELECT state FROM prune_jobs WHERE id = 'job-1'") == [("finished",)],
        30,
        "the next writer to finish the job",
    )
    assert query(postgres_url, "SELECT id FROM workflow_executions") == [(running,)]
    assert not query(postgres_url, "SELECT 1 FROM workflow_executions WHERE id = ANY(%s)", (done,))
    (message,) = query(postgres_url, "SELECT message FROM audit_events WHERE id = 'job-1'")[0]
    assert message.startswith("pruned 3 workflows created before 2024-01-01T00:00:00.000000+00:00")


def test_the_prune_command_on_postgresql_deletes_and_prints_the_counts(
    postgres_url, pg_writers, zmq_context, tcp_env
):
    row = wait_serving(postgres_url, pg_writers(postgres_url))
    _old_records(postgres_url, row, zmq_context, finished=5)
    result = cli("prune", "--older-than", "30d", "--json", "--db", postgres_url, env=tcp_env)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["workflow_executions"] == 5 and printed["task_executions"] == 5
    assert _counts(postgres_url) == (1, 0, 0)
