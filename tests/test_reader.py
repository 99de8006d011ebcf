"""The Reader: read-only, thread-safe, and clear about files that do not exist."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from see_persistence import Reader, ReadOnlyViolation
from see_persistence.protocol import schema


def test_a_reader_on_a_missing_file_raises_file_not_found_with_the_path(tmp_path):
    reader = Reader(tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError, match=r"missing\.db"):
        reader.list_workflows()
    assert not (tmp_path / "missing.db").exists()


@pytest.fixture
def populated(db, writers, clients):
    writers(db).wait_holding_lease()
    report = clients(db, "--workflows", "4", "--tasks", "2").finish()
    assert report["flushed"]
    return db, report


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO audit_events (id, event_type, message, timestamp) VALUES ('x', 't', 'm', 'now')",
        "UPDATE workflow_executions SET status = 'failed'",
        "DELETE FROM workflow_executions",
        "DROP TABLE audit_events",
        "CREATE TABLE sneaky (x)",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
        "ATTACH DATABASE ':memory:' AS other",
        "VACUUM",
    ],
)
def test_query_refuses_anything_that_writes(populated, sql):
    db, _ = populated
    reader = Reader(db)
    with pytest.raises(ReadOnlyViolation):
        reader.query(sql)
    assert reader.count_rows()["workflow_executions"] == 4


def test_query_runs_read_only_sql(populated):
    db, report = populated
    reader = Reader(db)
    rows = reader.query(
        "SELECT COUNT(*) FROM task_executions WHERE instance_id = ?", (report["instance_id"],)
    )
    assert rows == [(8,)]
    assert reader.query("PRAGMA table_info(audit_events)")[0][1] == "id"
    assert reader.query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT i FROM n"
    ) == [(1,), (2,), (3,)]


def test_queries_return_models_in_the_documented_order(populated):
    db, report = populated
    reader = Reader(db)
    runs = reader.list_workflows(limit=10)
    assert [r.created_at for r in runs] == sorted((r.created_at for r in runs), reverse=True)
    assert reader.list_workflows(limit=2, offset=1) == runs[1:3]
    assert reader.list_workflows(status="completed", instance_id=report["instance_id"]) == runs
    assert reader.list_workflows(status="failed") == []
    assert reader.get_workflow(runs[0].id) == runs[0]
    assert reader.get_workflow("nope") is None
    assert runs[0].metadata["label"] == "c"
    trail = reader.get_audit_trail(runs[0].id)
    assert [e.timestamp for e in trail] == sorted(e.timestamp for e in trail) and len(trail) == 1
    stats = reader.get_instance_stats()
    assert stats.total_workflows == 4
    assert stats.active_instances == 0  # the client closed: its instance ended


def test_one_reader_serves_several_threads(populated):
    db, _ = populated
    reader = Reader(db)
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                results.append(len(reader.list_workflows()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and results == [4] * 200


@pytest.mark.parametrize(
    "created_at",
    [
        "2026-12-01T07:37:36.123456+00:00",
        "2026-12-01T07:37:36.123456789+00:00",  # chrono's to_rfc3339
        "2026-12-01T07:37:36Z",
        "2026-12-01 07:37:36",  # SQLite's CURRENT_TIMESTAMP default: naive, UTC
    ],
)
@pytest.mark.parametrize("success", [None, 0, 1])
@pytest.mark.parametrize("metadata", [None, "{}", '{"a": [1, 2]}', "[1]", "{not json"])
def test_the_fast_row_path_gives_what_the_slow_one_does(created_at, success, metadata):
    from see_persistence.reader import queries

    row = ("w-1", "name", "running", created_at, None, created_at, success, None, metadata, "i-1", created_at)
    fast, slow = queries._workflow(row), queries._slow_workflow(row)
    assert fast == slow
    assert fast.created_at.tzinfo is not None
    task_row = (
        "t-1",
        "w-1",
        "t",
        "failed",
        created_at,
        None,
        None,
        success,
        "e",
        None,
        '["x", 3]',
        None,
        2,
        None,
        None,
    )
    assert queries._task(task_row) == queries._slow_task(task_row)
    audit_row = ("e-1", "w-1", None, "type", "message", created_at, metadata, None)
    assert queries._audit(audit_row) == queries._slow_audit(audit_row)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reads_through_its_own_connection(tmp_path):
    db = tmp_path / "forked.db"
    sqlite3.connect(str(db)).executescript(";".join(schema.upgrade_statements(0))).close()
    reader = Reader(db)
    assert reader.list_workflows() == []
    parent_conn = reader._conn()
    assert reader._conn() is parent_conn  # one connection per thread, reused
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = reader._conn() is not parent_conn and reader.list_workflows() == []
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reader._conn() is parent_conn
    reader.close()
