"""The Reader: read-only, thread-safe, and clear about files that do not exist."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientProcess, WriterProcess
from test_protocol_schema import SEED_DDL  # the S_E_E seed's DDL, verbatim

from see_persistence import Reader, ReadOnlyViolation
from see_persistence.protocol import schema
from see_persistence.protocol.models import InstanceStats
from see_persistence.writer.storage import upgrade_schema

NOW = "2026-12-01T07:37:36.123456+00:00"


def test_a_reader_on_a_missing_file_raises_file_not_found_with_the_path(tmp_path):
    reader = Reader(tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError, match=r"missing\.db"):
        reader.list_workflows()
    assert not (tmp_path / "missing.db").exists()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One file a writer and a client filled, shared: the tests that use it only read."""
    directory = tmp_path_factory.mktemp("reader")
    db = directory / "data" / "workflows.db"
    db.parent.mkdir(mode=0o700)
    writer = WriterProcess(db, directory / "writer.log")
    client = None
    try:
        writer.wait_holding_lease()
        client = ClientProcess(db, "--workflows", "4", "--tasks", "2")
        report = client.finish()
        assert report["flushed"]
        yield db, report
    finally:
        if client is not None:
            client.kill()
        writer.stop()


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
    tasks = reader.get_tasks_for_workflow(runs[0].id)
    assert tasks and [reader.get_task(t.id) for t in tasks] == tasks
    assert reader.get_task("nope") is None
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
@pytest.mark.parametrize(
    "metadata", [None, "{}", '{"a": [1, 2]}', "[1]", '"text"', "null", "42", "{not json"]
)
def test_the_fast_row_path_gives_what_the_slow_one_does(created_at, success, metadata):
    from see_persistence.reader import rows

    row = ("w-1", "name", "running", created_at, None, created_at, success, None, metadata, "i-1", created_at)
    fast, slow = rows.workflow(row), rows._slow_workflow(row)
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
    assert rows.task(task_row) == rows._slow_task(task_row)
    audit_row = ("e-1", "w-1", None, "type", "message", created_at, metadata, None)
    assert rows.audit(audit_row) == rows._slow_audit(audit_row)


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


# -- files made by the Rust core (the seed's tables only) or by an older writer --------------


def _seed_file(path: Path, workflows: int = 3) -> Path:
    """A file as the app's Rust core makes it: the seed's DDL and nothing of this layer."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.executescript(SEED_DDL)
    conn.executemany(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at, instance_id)"
        " VALUES (?, 'n', 'completed', ?, 'i-1')",
        [(f"w-{n}", f"2026-12-01T07:37:3{n}.000000+00:00") for n in range(workflows)],
    )
    conn.close()
    return path


def _traced(reader: Reader, call: Callable[[], object]) -> list[str]:
    """The statements `call` runs on the reader's connection."""
    conn = reader._conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return seen


def test_a_file_without_instances_or_dead_letters_reads_as_having_none(tmp_path):
    with Reader(_seed_file(tmp_path / "seed.db")) as reader:
        assert reader.get_instances() == [] and reader.get_instances(limit=5, offset=1) == []
        assert reader.get_instance("i-1") is None
        assert reader.get_active_instances() == []
        assert reader.get_instance_stats() == InstanceStats(
            total_workflows=3, active_instances=0, workflows_per_instance={}
        )
        assert reader.get_rejections() == [] and reader.get_rejections("i-1") == []
        assert reader.get_writer_status() is None and reader.get_counters() == {}
        assert len(reader.list_workflows()) == 3


def test_a_file_upgraded_while_a_reader_is_open_shows_its_new_tables_at_once(tmp_path):
    db = _seed_file(tmp_path / "seed.db")
    with Reader(db) as reader:
        assert reader.get_instances() == [] and reader.get_rejections() == []
        conn = sqlite3.connect(str(db), isolation_level=None)
        upgrade_schema(conn, 0)  # a writer of ours adopts the file
        conn.execute("INSERT INTO instances (id, state, rejected) VALUES ('i-1', 'ended', 2)")
        conn.execute("INSERT INTO dead_letters (received_at, reason, raw) VALUES (?, 'r', x'00')", (NOW,))
        conn.close()
        [instance] = reader.get_instances()
        assert (instance.id, instance.rejected) == ("i-1", 2)
        assert [r.reason for r in reader.get_rejections()] == ["r"]


def _old_file(path: Path) -> Path:
    """A file of schema version 3: `instances` without the `rejected` column."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    for statement in schema.upgrade_statements(0):
        conn.execute(statement)
    conn.execute("INSERT INTO instances (id, state, last_seq) VALUES ('i-1', 'ended', 7)")
    conn.close()
    return path


def test_an_older_writers_instances_read_with_rejected_zero_until_the_column_comes(tmp_path):
    db = _old_file(tmp_path / "v3.db")
    with Reader(db) as reader:
        assert [(i.id, i.last_seq, i.rejected) for i in reader.get_instances()] == [("i-1", 7, 0)]
        assert reader.get_instance("i-1") == reader.get_instances()[0]
        assert reader.instance_progress("i-1") == (7, 0)
        conn = sqlite3.connect(str(db), isolation_level=None)
        conn.execute("ALTER TABLE instances ADD COLUMN rejected INTEGER DEFAULT 0")
        conn.execute("UPDATE instances SET rejected = 4")
        conn.close()
        instance = reader.get_instance("i-1")
        assert instance is not None and instance.rejected == 4
        assert reader.instance_progress("i-1") == (7, 4)


def test_the_columns_are_looked_up_once_per_connection(tmp_path):
    db = _old_file(tmp_path / "v3.db")
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("ALTER TABLE instances ADD COLUMN rejected INTEGER DEFAULT 0")
    conn.close()
    with Reader(db) as reader:
        first = _traced(reader, reader.get_instances)
        assert sum("PRAGMA table_info" in sql for sql in first) == 1
        for call in (reader.get_instances, lambda: reader.get_instance("i-1"), reader.get_active_instances):
            assert not any("PRAGMA" in sql for sql in _traced(reader, call))
        reader.close()  # a new connection looks again
        assert any("PRAGMA table_info" in sql for sql in _traced(reader, reader.get_instances))


@pytest.mark.unit
def test_the_plain_lease_has_the_fields_of_the_writer_status_model():
    # Reader.writer_lease (what a Client reads, without pydantic) is get_writer_status's source:
    # a field added to one and not the other would be lost or refused.
    import dataclasses

    from see_persistence.protocol.models import WriterStatus
    from see_persistence.reader.writer_state import WriterLease

    assert [f.name for f in dataclasses.fields(WriterLease)] == list(WriterStatus.model_fields)
