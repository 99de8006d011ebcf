"""`see-persistence migrate`: SQLite into PostgreSQL and back, on a real server, as real processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import assert_one_line_error, cli
from conftest import wait_until
from test_postgresql_reader import TABLES, WORKFLOWS, fill_postgresql, fill_sqlite

from see_persistence import Reader
from see_persistence.commands.migrate_tables import MIGRATED_TABLES, Checksum
from see_persistence.protocol.schema_postgresql import POSTGRESQL_ONLY_COLUMNS

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
                # A PostgreSQL-only column (a writer's commit number) has no SQLite counterpart.
                if (spec.name, r[0]) not in POSTGRESQL_ONLY_COLUMNS
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
    with psycopg.connect(postgres_url) as conn:
        # Migrated, not committed by a writer: before every commit, for `tail --follow`.
        assert conn.execute("SELECT DISTINCT commit_seq FROM audit_events").fetchall() == [(0,)]
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


def bench_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "migrate_bench", Path(__file__).parent.parent / "tools" / "migrate_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migrate_while_the_writer_commits_copies_one_snapshot(tmp_path: Path, postgres_url: str) -> None:
    bench = bench_module()
    db = tmp_path / "workflows.db"
    built = 8_000
    bench.build_sqlite(db, built)
    env = {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(tmp_path / "run")}
    writer = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "writer", "--db", str(db)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    client = None
    try:
        bench._wait_for_writer(db, time.monotonic() + DEADLINE_S)
        client = subprocess.Popen(
            [sys.executable, "-c", bench.CLIENT_SCRIPT, str(db)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "started"
        # Commits land before, during and after the snapshot.
        with Reader(db) as reader:
            more = built + 100
            rows = reader.count_rows
            wait_until(lambda: rows()["workflow_executions"] > more, DEADLINE_S, "the client's commits")
        result = cli("migrate", db, postgres_url, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
    finally:
        if client is not None and client.stdin is not None:
            client.stdin.write("stop\n")
            client.stdin.close()
            client.wait(timeout=DEADLINE_S)
        writer.terminate()
        writer.wait(timeout=DEADLINE_S)
    # The report names the snapshot: the writer's commit number then.
    assert "at the source's commit " in result.stdout and "of writer epoch 1 (held)" in result.stdout
    copied = checksums_postgresql(postgres_url)
    final = checksums_sqlite(db)
    assert built < copied["workflow_executions"][0] <= final["workflow_executions"][0]
    # Workflows are copied before tasks: copied from a moving file rather than one snapshot, a
    # task could name a workflow committed after its table was read, which PostgreSQL's
    # foreign key refuses. Every task has its workflow, and every table verified equal.
    assert "equal on both sides" in result.stdout
    assert copied["instances"][0] >= 1


def test_bad_arguments_and_destinations_are_refused_clearly(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "workflows.db"
    fill_sqlite(db)
    other = tmp_path / "other.db"
    fill_sqlite(other)
    usage = cli("migrate", db, tmp_path / "new.db")
    line = assert_one_line_error(usage, 2, "both SQLite files", "see-persistence backup")
    assert line.startswith("see-persistence migrate: ")
    assert_one_line_error(cli("migrate", db, db), 2)
    assert_one_line_error(cli("migrate", db, "mysql://x/y"), 2, "mysql://")
    assert_one_line_error(
        cli("migrate", tmp_path / "missing.db", postgres_url), 1, "no see-persistence database"
    )
    assert cli("migrate", db).returncode == 2  # DEST missing: argparse's usage error
    # A PostgreSQL source into an existing file.
    fill_postgresql(postgres_url)
    assert_one_line_error(cli("migrate", postgres_url, other), 1, "exists")
    # A destination that already holds records is someone else's.
    assert_one_line_error(cli("migrate", db, postgres_url), 1, "already holds data", "workflow_executions")


def test_a_destination_with_a_writer_or_another_migration_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    from see_persistence.writer.pg_storage import WRITER_LOCK_KEY

    db = tmp_path / "workflows.db"
    fill_sqlite(db)
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_KEY,))
        assert_one_line_error(cli("migrate", db, postgres_url), 3, "writer holds the lease")
    # An interrupted migration of another source is not carried on from this one.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE see_migration (source TEXT, started_at TEXT, runs INTEGER, snapshot TEXT)")
        conn.execute("INSERT INTO see_migration VALUES ('/elsewhere.db', 'x', 1, NULL)")
        conn.execute(
            "CREATE TABLE see_migration_chunks (table_name TEXT, number INTEGER, hi TEXT, row_count INTEGER,"
            " checksum TEXT)"
        )
    assert_one_line_error(cli("migrate", db, postgres_url), 1, "unfinished migration from /elsewhere.db")


def test_a_progress_bar_at_a_terminal_and_plain_lines_otherwise(tmp_path: Path, postgres_url: str) -> None:
    import pty

    db = tmp_path / "workflows.db"
    bench_module().build_sqlite(db, 6_000)
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "see_persistence", "migrate", str(db), postgres_url],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not data:
                break
            shown += data
        out, _ = process.communicate(timeout=DEADLINE_S)
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert process.returncode == 0, shown
    assert b"\rmigrate [" in shown and b"18000/18000 rows" in shown
    assert "equal on both sides" in out
    back = tmp_path / "back.db"
    plain = cli("migrate", postgres_url, back)
    assert plain.returncode == 0, plain.stderr
    assert "\r" not in plain.stderr
    assert "migrate: workflow_executions: 6000 rows" in plain.stderr.splitlines()


def test_from_postgresql_while_another_session_commits_is_one_snapshot(
    tmp_path: Path, postgres_url: str
) -> None:
    import threading
    import uuid

    db = tmp_path / "workflows.db"
    bench_module().build_sqlite(db, 6_000)
    assert cli("migrate", db, postgres_url, timeout=300).returncode == 0
    stop = threading.Event()
    committed = [0]

    def commit_pairs() -> None:
        # Each workflow and its task in two transactions: read table by table outside one
        # snapshot, a task could arrive without its workflow.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            while not stop.is_set():
                wid, tid = str(uuid.uuid4()), str(uuid.uuid4())
                conn.execute(
                    "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata)"
                    " VALUES (%s, 'late', 'running', now(), '{}')",
                    (wid,),
                )
                conn.execute(
                    "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, logs)"
                    " VALUES (%s, %s, 'step', 'running', now(), '[]')",
                    (tid, wid),
                )
                committed[0] += 1

    thread = threading.Thread(target=commit_pairs)
    thread.start()
    try:
        wait_until(lambda: committed[0] >= 20, DEADLINE_S, "the other session's commits")
        back = tmp_path / "back.db"
        result = cli("migrate", postgres_url, back, timeout=300)
    finally:
        stop.set()
        thread.join(timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr
    copied = checksums_sqlite(back)
    # One snapshot sees every pair whole, except perhaps the last workflow, whose task the
    # other session had not committed yet; read table by table, tasks could outnumber them.
    assert 0 <= copied["workflow_executions"][0] - copied["task_executions"][0] <= 1
    assert 6_000 + 20 <= copied["workflow_executions"][0] <= 6_000 + committed[0]
    assert cli("check", "--db", back).returncode == 0
