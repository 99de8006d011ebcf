"""The read-side commands on a real PostgreSQL server: --db URL and $SEE_PERSISTENCE_DB.

The database is filled as tests/test_postgresql_reader.py fills it (the same rows on both
backends); each command runs as a real `python -m see_persistence` process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli
from test_postgresql_reader import EVENTS, WORKFLOWS, fill_postgresql, fill_sqlite

pytest.importorskip("psycopg")


@pytest.fixture
def filled(postgres_url: str) -> str:
    """A PostgreSQL database holding the reader tests' rows."""
    fill_postgresql(postgres_url)
    return postgres_url


def test_status_reads_the_server(filled: str) -> None:
    result = cli("status", "--json", "--db", filled)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"]["workflow_executions"] == len(WORKFLOWS)
    assert report["file_bytes"] is None and report["wal_bytes"] is None
    assert "postgresql://" in report["database"]
    text = cli("status", "--db", filled)
    assert text.returncode == 0, text.stderr
    assert "(PostgreSQL)" in text.stdout.splitlines()[0]


def test_the_environment_variable_names_the_server(filled: str) -> None:
    env = {**os.environ, "SEE_PERSISTENCE_DB": filled}
    result = cli("query", "--json", "SELECT COUNT(*) AS n FROM workflow_executions", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": len(WORKFLOWS)}


def test_query_gives_the_sqlite_values_and_refuses_writes(filled: str, tmp_path: Path) -> None:
    db = tmp_path / "workflows.db"
    fill_sqlite(db)
    sql = "SELECT id, created_at, success, error_message FROM workflow_executions WHERE id = ?"
    on_server = cli("query", "--csv", sql, "-p", "w08", "--db", filled)
    on_file = cli("query", "--csv", sql, "-p", "w08", "--db", db)
    assert on_server.returncode == 0, on_server.stderr
    # Times as RFC 3339 text in UTC on both; a boolean is False where SQLite has 0.
    assert on_server.stdout.replace("False", "0") == on_file.stdout
    refused = cli("query", "DELETE FROM workflow_executions", "--db", filled)
    assert_one_line_error(refused, 1, "read-only")
    assert cli("query", "SELECT COUNT(*) FROM workflow_executions", "--db", filled).stdout.startswith("count")
    bad = cli("query", "SELECT nope FROM workflow_executions", "--db", filled)
    assert_one_line_error(bad, 1, "SQL error", "nope")


def test_tail_prints_the_last_events_in_commit_order(filled: str) -> None:
    result = cli("tail", "-n", "2", "--json", "--db", filled)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    # Inserted outside any writer's commit, every row has commit number 0: then by id.
    assert shown == sorted(e[0] for e in EVENTS)[-2:]


def test_tail_without_commit_numbers_orders_by_time_and_refuses_follow_saying_why(filled: str) -> None:
    import psycopg

    with psycopg.connect(filled, autocommit=True) as conn:  # a database no writer of this version served
        conn.execute("ALTER TABLE audit_events DROP COLUMN commit_seq")
    result = cli("tail", "-n", "2", "--json", "--db", filled)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    by_time = sorted(EVENTS, key=lambda e: (e[5], e[0]))
    assert shown == [e[0] for e in by_time[-2:]]
    follow = cli("tail", "--follow", "--db", filled)
    assert_one_line_error(follow, 1, "tail --follow", "commit_seq")


def test_check_on_the_server(filled: str) -> None:
    result = cli("check", "--json", "--db", filled)
    outcomes = {o["name"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert set(outcomes) == {"integrity", "foreign_keys", "schema", "permissions", "lease"}
    assert "the one this code knows" in outcomes["schema"]["message"]


def test_prune_dry_run_counts_on_the_server(filled: str) -> None:
    dry = cli("prune", "--older-than", "1d", "--dry-run", "--json", "--db", filled)
    assert dry.returncode == 0, dry.stderr
    counts = json.loads(dry.stdout)
    finished = [w for w in WORKFLOWS if w[2] in ("completed", "failed", "cancelled")]
    assert counts["workflow_executions"] == len(finished)
    # The filled lease row names a writer that no process serves: nothing confirms the prune.
    real = cli("prune", "--older-than", "1d", "--timeout", "1", "--db", filled)
    assert_one_line_error(real, 1, "no writer is running", "1 s")


def test_a_database_without_our_tables_and_a_server_that_refuses(postgres_url: str) -> None:
    empty = cli("status", "--db", postgres_url)
    assert_one_line_error(empty, 1, "not a see-persistence database", "workflow_executions")
    missing = postgres_url.replace("see_test_", "no_such_")
    refused = cli("status", "--db", missing)
    assert_one_line_error(refused, 1, "does not exist")
    assert "Traceback" not in refused.stderr


def test_demo_still_takes_a_file_only(postgres_url: str) -> None:
    result = cli("demo", "--db", postgres_url)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_backup_and_restore_through_pg_dump(filled: str, tmp_path: Path) -> None:
    from see_persistence.commands.pg_tools import find_program

    if find_program("pg_dump") is None or find_program("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed beside the server")
    dump = tmp_path / "workflows.dump"
    made = cli("backup", dump, "--db", filled)
    assert made.returncode == 0, made.stderr
    assert dump.stat().st_mode & 0o077 == 0
    assert_one_line_error(cli("backup", dump, "--db", filled), 1, "exists")
    import psycopg

    with psycopg.connect(filled, autocommit=True) as conn:
        conn.execute("DELETE FROM audit_events")
    restored = cli("restore", dump, "--db", filled)
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(filled, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit_events").fetchone() == (len(EVENTS),)
    bad = tmp_path / "not-a-dump"
    bad.write_text("nothing\n")
    failed = cli("restore", bad, "--db", filled)
    assert_one_line_error(failed, 1, "pg_restore failed", "as it was")
    with psycopg.connect(filled, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit_events").fetchone() == (len(EVENTS),)


def test_restore_is_refused_while_a_writer_holds_the_lock(filled: str, tmp_path: Path) -> None:
    import psycopg

    from see_persistence.writer.pg_storage import WRITER_LOCK_KEY

    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP")
    with psycopg.connect(filled, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_KEY,))
        from see_persistence.commands.pg_tools import find_program

        if find_program("pg_restore") is None:
            pytest.skip("pg_restore is not installed beside the server")
        result = cli("restore", dump, "--db", filled)
    assert_one_line_error(result, 3, "live writer")
