"""Migrate a large SQLite file into PostgreSQL while its writer commits, and report rows/s.

    python tools/migrate_bench.py --workflows 100000 [--postgresql-url URL]

Builds an SQLite file of N workflows (each with one task with two log lines in `logs`, and
one audit event: the rows as the writer lays them out, written directly, which is far
faster than through a writer), starts a real writer on it and a real Client process that
keeps recording while `see-persistence migrate` runs, then reports the migrate's own output
(the snapshot's commit number, every table's count and checksum, equal on both sides) and
rows/s. Without --postgresql-url it starts a throwaway server as the test suite does
(tests/postgres_server.py). The suite cannot afford 1M workflows; this tool can.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from see_persistence.idgen import new_id
from see_persistence.protocol import timestamps

ROOT = Path(__file__).resolve().parent.parent
BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
WRITER_START_TIMEOUT_S = 30.0
CLIENT_SCRIPT = """
import sys, time
from see_persistence import Client
with Client(sys.argv[1]) as client:
    print("started", flush=True)
    n = 0
    while not sys.stdin.closed:
        wid = client.create_workflow("during-migrate", metadata={"n": n})
        client.update_workflow_status(wid, "running")
        tid = client.create_task(wid, "step", execution_order=1)
        client.append_task_log(tid, f"line {n}")
        client.log_audit_event("note", f"event {n}", workflow_id=wid)
        client.update_workflow_status(wid, "completed")
        n += 1
        if n % 50 == 0:
            client.flush(timeout=10)
            if sys.stdin in __import__("select").select([sys.stdin], [], [], 0)[0]:
                break
"""


def build_sqlite(path: Path, workflows: int, batch: int = 10_000) -> int:
    """Write `workflows` workflows (a task and an audit event each) into a new file; the rows written."""
    from see_persistence.writer.storage import open_write_connection, upgrade_schema

    conn = open_write_connection(path)
    try:
        upgrade_schema(conn, BASE_US)
        rows = 0
        for start in range(0, workflows, batch):
            wf, tasks, events = [], [], []
            for n in range(start, min(start + batch, workflows)):
                at = timestamps.format_us(BASE_US + n * 1000)
                wid, tid, eid = new_id(), new_id(), new_id()
                status = ("completed", "failed", "running")[n % 3]
                success = {"completed": 1, "failed": 0}.get(status)
                done = at if success is not None else None
                metadata = json.dumps({"n": n, "branch": "main" if n % 2 else "dev", "ratio": n / 7})
                wf.append((wid, f"nightly-{n % 10}", status, at, at, done, success, None, metadata, None, at))
                logs = json.dumps([f"step {n} began", "step ended ✓"])
                tasks.append(
                    (tid, wid, "build", status, at, at, done, success, None, "ok", logs, 0, 1, None, at)
                )
                events.append(
                    (eid, wid, tid, "workflow_started", f"started {n}", at, json.dumps({"n": n}), None)
                )
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO workflow_executions VALUES (?,?,?,?,?,?,?,?,?,?,?)", wf)
            conn.executemany(
                "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, started_at,"
                " completed_at, success, error_message, output, logs, retry_count, execution_order,"
                " instance_id, last_updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                tasks,
            )
            conn.executemany(
                "INSERT INTO audit_events (id, workflow_id, task_id, event_type, message, timestamp, data,"
                " instance_id) VALUES (?,?,?,?,?,?,?,?)",
                events,
            )
            conn.execute("COMMIT")
            rows += len(wf) + len(tasks) + len(events)
        return rows
    finally:
        conn.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "see_persistence", *args]


def _wait_for_writer(db: Path, deadline: float) -> None:
    from see_persistence import Reader

    with Reader(db) as reader:
        while time.monotonic() < deadline:
            status = reader.get_writer_status()
            if status is not None and status.alive:
                return
            time.sleep(0.05)
    raise SystemExit(f"no writer on {db} within {WRITER_START_TIMEOUT_S:g} s")


def run(workflows: int, url: str, workdir: Path) -> int:
    """Build, start a writer and a client, migrate, print the report; the migrate's exit code."""
    db = workdir / "workflows.db"
    started = time.monotonic()
    rows = build_sqlite(db, workflows)
    print(f"built {db}: {workflows} workflows, {rows} rows in {time.monotonic() - started:.1f} s", flush=True)
    env = {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(workdir / "run")}
    writer = subprocess.Popen(_cli("writer", "--db", str(db)), env=env, stderr=subprocess.DEVNULL)
    client = None
    try:
        _wait_for_writer(db, time.monotonic() + WRITER_START_TIMEOUT_S)
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT_SCRIPT, str(db)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        client.stdout.readline()  # "started": it records from now on
        began = time.monotonic()
        result = subprocess.run(_cli("migrate", str(db), url), env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - began
    finally:
        if client is not None and client.stdin is not None:
            client.stdin.write("stop\n")
            client.stdin.close()
            client.wait(timeout=60)
        writer.terminate()
        writer.wait(timeout=60)
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr, end="", file=sys.stderr)
        return result.returncode
    copied = sum(
        int(line.split()[1]) for line in result.stdout.splitlines() if line.strip().endswith("sides)")
    )
    print(
        f"migrate: {copied} rows in {elapsed:.1f} s (whole command): {copied / elapsed:.0f} rows/s",
        flush=True,
    )
    return 0


def main() -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument(
        "--postgresql-url", help="an empty database to migrate into (default: a throwaway server)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="see-migrate-bench-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o700)
        if args.postgresql_url:
            return run(args.workflows, args.postgresql_url, workdir)
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres_server import PostgresServer, find_binaries

        server = PostgresServer(find_binaries())
        server.start()
        try:
            import psycopg

            with psycopg.connect(server.url(), autocommit=True) as admin:
                admin.execute('CREATE DATABASE "migrate_bench"')
            return run(args.workflows, server.url("migrate_bench"), workdir)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
