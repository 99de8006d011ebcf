"""Schema evolution: the seed's file is upgraded in place; a newer file still reads and writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_protocol_schema import SEED_DDL  # the S_E_E seed's DDL, verbatim

from see_persistence import Reader, Status
from see_persistence.protocol import schema


def _seed_file(path: Path, rows: int) -> None:
    """A file as the seed's Rust core wrote it: its DDL, chrono timestamps, no layer tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SEED_DDL)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    for n in range(rows):
        wid = f"seed-wf-{n}"
        conn.execute(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, started_at,"
            " completed_at, success, metadata, instance_id)"
            " VALUES (?, ?, 'completed', ?, ?, ?, 1, '{\"old\":true}', 'rust-gui')",
            (
                wid,
                f"legacy {n}",
                "2025-03-01T10:00:00.123456789+00:00",
                "2025-03-01T10:00:01+00:00",
                "2025-03-01T10:00:02.5+00:00",
            ),
        )
        conn.execute(
            "INSERT INTO task_executions"
            " (id, workflow_id, task_name, status, created_at, logs, execution_order)"
            " VALUES (?, ?, 'build', 'completed', '2025-03-01T10:00:00+00:00', '[\"a\",\"b\"]', 1)",
            (f"seed-t-{n}", wid),
        )
        conn.execute(
            "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp, data)"
            " VALUES (?, ?, 'workflow_completed', 'done', '2025-03-01T10:00:03+00:00', '{}')",
            (f"seed-e-{n}", wid),
        )
    conn.commit()
    conn.close()


def test_a_seed_file_is_upgraded_by_the_writer_without_losing_a_row(db, writers, clients):
    _seed_file(db, rows=50)
    writers(db).wait_holding_lease()
    reader = Reader(db)
    assert reader.query("SELECT MAX(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    counts = reader.count_rows()
    assert (counts["workflow_executions"], counts["task_executions"], counts["audit_events"]) == (50, 50, 50)
    old = reader.get_workflow("seed-wf-7")
    assert old.status == Status.COMPLETED and old.success is True and old.metadata == {"old": True}
    assert old.created_at.microsecond == 123456  # chrono's nine digits read back
    assert reader.get_tasks_for_workflow("seed-wf-7")[0].logs == ["a", "b"]
    assert reader.get_audit_trail("seed-wf-7")[0].event_type == "workflow_completed"
    assert clients(db, "--workflows", "3").finish()["flushed"] is True
    assert reader.count_rows()["workflow_executions"] == 53


def test_a_file_from_a_newer_version_still_reads_and_writes(db, writers, clients):
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    for statement in schema.upgrade_statements(0):
        conn.execute(statement)
    for table, column, declaration in schema.column_additions(0):  # a newer version has ours too
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    conn.execute("ALTER TABLE workflow_executions ADD COLUMN priority INTEGER")
    conn.execute("ALTER TABLE task_executions ADD COLUMN host_hint TEXT")
    conn.execute("CREATE TABLE future_feature (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("INSERT INTO future_feature (note) VALUES ('keep me')")
    conn.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (?, 'x')", (schema.SCHEMA_VERSION + 5,)
    )
    conn.commit()
    conn.close()
    writers(db).wait_holding_lease()
    report = clients(db, "--workflows", "4", "--tasks", "2").finish()
    assert report["flushed"] is True
    reader = Reader(db)
    runs = reader.get_workflows_for_instance(report["instance_id"])
    assert len(runs) == 4 and all(r.status == Status.COMPLETED for r in runs)
    assert len(reader.get_tasks_for_workflow(runs[0].id)) == 2
    assert reader.query("SELECT MAX(version) FROM schema_version") == [(schema.SCHEMA_VERSION + 5,)]
    assert reader.query("SELECT note FROM future_feature") == [("keep me",)]


def test_the_upgrade_is_one_transaction(tmp_path):
    from see_persistence.writer.storage import open_write_connection, upgrade_schema

    path = tmp_path / "seed.db"
    _seed_file(path, rows=3)
    conn = open_write_connection(path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert upgrade_schema(conn, 1_700_000_000_000_000) == 1
    conn.close()
    begins = [s for s in statements if s.startswith("BEGIN")]
    commits = [s for s in statements if s == "COMMIT"]
    assert begins == ["BEGIN IMMEDIATE"] and commits == ["COMMIT"]
    creates = [s for s in statements if s.lstrip().startswith("CREATE")]
    assert statements.index(begins[0]) < statements.index(creates[0]) < statements.index(commits[0])


def test_a_column_of_ours_missing_from_an_up_to_date_file_is_added(tmp_path):
    from see_persistence.writer.storage import upgrade_schema

    path = tmp_path / "wf.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in schema.upgrade_statements(0):  # the tables, but none of the added columns
        conn.execute(statement)
    conn.execute(schema.version_row_statement(), (schema.SCHEMA_VERSION, "2026-01-01T00:00:00.000000+00:00"))
    assert upgrade_schema(conn, 0) == schema.SCHEMA_VERSION
    for table, column, _ in schema.column_additions(0):
        assert column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}, (table, column)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)  # no second version row
    conn.execute(f"DROP INDEX {next(iter(schema.LAYER_INDEXES))}")
    upgrade_schema(conn, 0)
    indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert set(schema.LAYER_INDEXES) <= indexes
    conn.close()
