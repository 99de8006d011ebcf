"""`see-persistence migrate`: SQLite into PostgreSQL and back, on a real server, as real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_support import cli
from test_postgresql_reader import TABLES, WORKFLOWS, fill_postgresql, fill_sqlite

from see_persistence import Reader
from see_persistence.commands.migrate_tables import MIGRATED_TABLES, Checksum

psycopg = pytest.importorskip("psycopg")

DEADLINE_S = 60.0


def checksums_sqlite(path: Path) -> dict[str, tuple[int, str]]:
    """(count, checksum) of every migrated table of an SQLite file, as migrate computes them."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = {}
        for spec in MIGRATED_TABLES:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({spec.name})")]
            checksum = Checksum(spec.name, columns)
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {spec.name}"):
                checksum.add(row)
            found[spec.name] = (checksum.count, checksum.hex)
        return found
    finally:
        conn.close()


def checksums_postgresql(url: str) -> dict[str, tuple[int, str]]:
    """The same on PostgreSQL, values loaded as the Reader loads them."""
    from see_persistence.backends import DatabaseURL
    from see_persistence.commands.pg_session import connect

    conn = connect(DatabaseURL("postgresql", url), read_only=True, purpose="test")
    try:
        found = {}
        for spec in MIGRATED_TABLES:
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name::text FROM information_schema.columns WHERE table_name = %s"
                    " AND table_schema = current_schema() ORDER BY ordinal_position",
                    (spec.name,),
                ).fetchall()
            ]
            checksum = Checksum(spec.name, columns)
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {spec.name}").fetchall():
                checksum.add(row)
            found[spec.name] = (checksum.count, checksum.hex)
        return found
    finally:
        conn.close()


def models(path_or_url: str | Path) -> dict[str, Any]:
    """What a Reader gives for every workflow: the workflow, its tasks (logs included), its audit trail."""
    with Reader(path_or_url) as reader:
        result = {}
        for workflow in reader.list_workflows(limit=100_000):
            result[workflow.id] = (
                workflow.model_dump(),
                [t.model_dump() for t in reader.get_tasks_for_workflow(workflow.id)],
                [e.model_dump() for e in reader.get_audit_trail(workflow.id)],
            )
        return result


def test_sqlite_to_postgresql_and_back_is_equal(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "workflows.db"
    fill_sqlite(db)
    there = cli("migrate", db, postgres_url)
    assert there.returncode == 0, there.stderr
    assert "migrated" in there.stdout and "equal on both sides" in there.stdout
    back = tmp_path / "back.db"
    again = cli("migrate", postgres_url, back)
    assert again.returncode == 0, again.stderr
    assert back.stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(".back.db.migrating*"))
    assert checksums_sqlite(db) == checksums_postgresql(postgres_url) == checksums_sqlite(back)
    assert models(db) == models(postgres_url) == models(back)
    counts = checksums_sqlite(back)
    assert counts["workflow_executions"][0] == len(WORKFLOWS)
    assert counts["task_log_lines"][0] == len(dict((t, r) for t, _, r in TABLES)["task_log_lines"])
    # Nothing of the migration stays behind, and the writer's lease is the destination's own.
    with psycopg.connect(postgres_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert not {"see_migration", "see_migration_chunks"} & tables
        assert conn.execute("SELECT COUNT(*) FROM writer_lease").fetchone() == (0,)
        next_id = conn.execute("SELECT nextval(pg_get_serial_sequence('dead_letters', 'id'))").fetchone()
        assert next_id == (3,)  # past the two copied dead letters


def test_postgresql_to_sqlite_takes_the_servers_values(tmp_path: Path, postgres_url: str) -> None:
    fill_postgresql(postgres_url)
    db = tmp_path / "from-server.db"
    result = cli("migrate", postgres_url, db)
    assert result.returncode == 0, result.stderr
    assert models(db) == models(postgres_url)
    check = cli("check", "--db", db)
    assert check.returncode == 0, check.stdout
