"""The PostgreSQL writer publishes its counters, so `status --db postgresql://...` shows its throughput.

A real writer process on the session's server, a Client in this process committing through
it, then `see-persistence status` as a real process reading the server; beside it the same
run on an SQLite file, whose writer publishes the same `writer.*` counters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_postgresql_writer as pg_writer_tests
from cli_support import cli, stop_writer
from conftest import WriterProcess, wait_until
from test_postgresql_writer import wait_serving

from see_persistence import Client, Reader

pytest.importorskip("psycopg")

tcp_env = pg_writer_tests.tcp_env
pg_writers = pg_writer_tests.pg_writers

ROUNDS, WORKFLOWS_PER_ROUND = 5, 5
# Each workflow: created, running, completed. A round is flushed before the next is recorded,
# so it travels in a message of its own and commits in a batch of its own.
OPERATIONS = 3 * WORKFLOWS_PER_ROUND * ROUNDS
PREFIX = "writer."
# Counted by the SQLite writer only: commits of other programs writing the same file, which it
# sees by the file's data_version. No other program writes a PostgreSQL database of ours.
SQLITE_ONLY_TOTAL = "other_writer_commits_seen"


def _record(db: str) -> None:
    """OPERATIONS operations from one Client in ROUNDS flushed rounds, all committed when it returns."""
    with Client(db) as client:
        for round_no in range(ROUNDS):
            for n in range(WORKFLOWS_PER_ROUND):
                wid = client.create_workflow(f"counted {round_no}.{n}")
                client.update_workflow_status(wid, "running")
                client.update_workflow_status(wid, "completed")
            assert client.flush(timeout=30)


def _published(db: str, pid: int) -> dict[str, int]:
    """The writer `pid`'s counters once they count every operation recorded (names without the prefix)."""
    with Reader(db) as reader:
        counters = wait_until(
            lambda: (
                (c := reader.get_counters()).get(PREFIX + "pid") == pid
                and c.get(PREFIX + "operations_total", 0) >= OPERATIONS
                and c
            ),
            30,
            f"writer pid {pid}'s counters with the {OPERATIONS} operations",
        )
    return {k[len(PREFIX) :]: v for k, v in counters.items() if k.startswith(PREFIX)}


def _status(db: str, env: dict[str, str] | None, *extra: str) -> str:
    result = cli("status", "--db", db, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_status_on_postgresql_shows_the_writers_counters_as_on_sqlite(
    postgres_url: str, pg_writers: Any, tcp_env: dict[str, str], tmp_path: Path
) -> None:
    writer = pg_writers(postgres_url)
    wait_serving(postgres_url, writer)
    _record(postgres_url)
    published = _published(postgres_url, writer.pid)

    report = json.loads(_status(postgres_url, tcp_env, "--json"))
    metrics = report["writer_metrics"]
    assert metrics is not None, report
    assert metrics["current"] is True and metrics["pid"] == writer.pid
    assert metrics["epoch"] == report["writer"]["epoch"] >= 1
    totals = metrics["totals"]
    assert totals["operations"] >= OPERATIONS
    assert totals["messages"] >= ROUNDS and totals["batches"] >= ROUNDS
    assert totals["dead_letters"] == 0
    for key in ("operations_per_s", "batch_operations_mean", "commit_us_mean", "commit_us_max"):
        assert isinstance(metrics[key], int) and metrics[key] >= 0
    assert metrics["commit_us_longest"] > 0 and metrics["hold_us_longest"] > 0
    # Every batch's commit is in the commit histogram; every transaction (batches, heartbeats,
    # the counters' own) in the hold histogram.
    commits = sum(v for k, v in published.items() if k.startswith("commit_us_bucket_"))
    holds = sum(v for k, v in published.items() if k.startswith("hold_us_bucket_"))
    assert commits == published["batches_total"] and holds > published["batches_total"]

    text = _status(postgres_url, tcp_env)
    metrics_line = next(line for line in text.splitlines() if line.startswith("metrics"))
    assert "operations/s" in metrics_line and "per batch" in metrics_line and "ms mean" in metrics_line
    assert "stale" not in metrics_line

    # The same run on an SQLite file: the same counters and the same report.
    db = tmp_path / "data" / "workflows.db"
    db.parent.mkdir(mode=0o700)
    sqlite_writer = WriterProcess(db, tmp_path / "sqlite-writer.log")
    try:
        sqlite_writer.wait_holding_lease()
        _record(str(db))
        on_sqlite = _published(str(db), sqlite_writer.pid)
        sqlite_report = json.loads(_status(str(db), None, "--json"))
    finally:
        stop_writer(sqlite_writer)
    assert set(published) == set(on_sqlite) - {f"{SQLITE_ONLY_TOTAL}_total"}
    assert sqlite_report["writer_metrics"].keys() == metrics.keys()
    assert set(sqlite_report["writer_metrics"]["totals"]) - {SQLITE_ONLY_TOTAL} == set(totals)


def test_keys_show_on_postgresql_prints_the_writers_connection_string(postgres_url, pg_writers, tcp_env):
    row = wait_serving(postgres_url, pg_writers(postgres_url))
    shown = cli("keys", "--db", postgres_url, "show", env=tcp_env)
    assert shown.returncode == 0, shown.stderr
    connect = [line for line in shown.stdout.splitlines() if line.startswith("connect (alive)")]
    assert len(connect) == 1 and f"key={row['public_key']}" in connect[0], shown.stdout
