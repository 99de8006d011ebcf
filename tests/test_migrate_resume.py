"""`see-persistence migrate` interrupted by kill -9 and run again: it carries on, and the result is exact.

Apart from tests/test_migrate.py so that pytest-xdist runs these long ones beside it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_support import assert_one_line_error, cli
from conftest import wait_until
from test_migrate import DEADLINE_S, bench_module, checksums_postgresql, checksums_sqlite
from test_postgresql_reader import fill_postgresql

from see_persistence import Reader
from see_persistence.commands.migrate import CHUNK_ROWS

psycopg = pytest.importorskip("psycopg")


def _chunks_committed(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('see_migration_chunks')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT COUNT(*) FROM see_migration_chunks").fetchone()
        return int(row[0]) if row else 0


def test_an_interrupted_migrate_carries_on_and_is_exact(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "workflows.db"
    # Three chunks in each table (a task and an audit event per workflow), nine in all. Killed
    # once two are committed, the copy stops in or just past workflow_executions: the first
    # workflow changed below is in a copied chunk, the task in one not copied yet.
    bench_module().build_sqlite(db, 3 * CHUNK_ROWS)
    migrate = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "migrate", str(db), postgres_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: _chunks_committed(postgres_url) >= 2 or migrate.poll() is not None,
            DEADLINE_S,
            "two chunks",
        )
        assert migrate.poll() is None, "the migration ended before it could be interrupted"
        os.kill(migrate.pid, signal.SIGKILL)
    finally:
        migrate.communicate(timeout=DEADLINE_S)
    copied = _chunks_committed(postgres_url)
    assert copied >= 2

    # Meanwhile the source changes, inside and outside what was copied already.
    conn = sqlite3.connect(db, isolation_level=None)
    first = conn.execute("SELECT id FROM workflow_executions ORDER BY id LIMIT 1").fetchone()[0]
    conn.execute("UPDATE workflow_executions SET status = 'cancelled', success = NULL WHERE id = ?", (first,))
    task = conn.execute("SELECT id FROM task_executions ORDER BY id LIMIT 1 OFFSET 10").fetchone()[0]
    conn.execute("DELETE FROM audit_events WHERE task_id = ?", (task,))
    conn.execute("DELETE FROM task_executions WHERE id = ?", (task,))
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata)"
        " VALUES ('00000000-0000-7000-8000-000000000000', 'early', 'pending', '2025-01-01 00:00:00', '{}')"
    )
    conn.close()

    again = cli("migrate", db, postgres_url, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming the copy" in again.stderr
    assert "re-copied" in again.stderr
    assert checksums_sqlite(db) == checksums_postgresql(postgres_url)
    with Reader(postgres_url) as reader:
        early = reader.get_workflow("00000000-0000-7000-8000-000000000000")
        assert early is not None and early.created_at.isoformat() == "2025-01-01T00:00:00+00:00"
        changed = reader.get_workflow(first)
        assert changed is not None and changed.status == "cancelled"


def _partial_chunks(partial: Path) -> int:
    if not partial.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{partial}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM see_migration_chunks").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not created yet


def test_into_a_file_interrupted_then_resumed_and_named_only_when_verified(
    tmp_path: Path, postgres_url: str, postgres_server: Any
) -> None:
    db = tmp_path / "workflows.db"
    # Two chunks per table, six in all; killed after two.
    bench_module().build_sqlite(db, 2 * CHUNK_ROWS)
    assert cli("migrate", db, postgres_url, timeout=300).returncode == 0
    back = tmp_path / "back.db"
    partial = tmp_path / ".back.db.migrating"
    migrate = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "migrate", postgres_url, str(back)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: _partial_chunks(partial) >= 2 or migrate.poll() is not None, DEADLINE_S, "two chunks"
        )
        assert migrate.poll() is None, "the migration ended before it could be interrupted"
        os.kill(migrate.pid, signal.SIGKILL)
    finally:
        migrate.communicate(timeout=DEADLINE_S)
    assert not back.exists() and partial.exists()
    assert partial.stat().st_mode & 0o077 == 0
    # Another source may not carry on this one's copy.
    other = postgres_url.replace("see_test_", "see_other_")
    name = other.split("/")[-1].split("?")[0]
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        fill_postgresql(other)
        refused = cli("migrate", other, back)
        assert_one_line_error(refused, 1, "unfinished migration from postgresql://", "finish that one")
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert_one_line_error(cli("migrate", db, tmp_path / "x.db"), 2, "both SQLite files")
    again = cli("migrate", postgres_url, back, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming the copy" in again.stderr
    assert back.exists() and not partial.exists()
    assert checksums_sqlite(db) == checksums_sqlite(back)
