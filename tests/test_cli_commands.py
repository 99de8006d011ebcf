"""The day-to-day commands, run as real processes against a database real writers filled."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys

import pytest
from cli_support import (
    LineReader,
    assert_one_line_error,
    cli,
    counts,
    json_lines,
    make_unwritten_db,
    populated_database,
    wait_for_counters,
)
from conftest import wait_until

from see_persistence import Client, Reader
from see_persistence.protocol import schema

COMMAND_NAMES = ["writer", "status", "tail", "query", "backup", "restore", "prune", "check", "demo"]


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """One database per module, filled by a real writer and client; the writer keeps running."""
    yield from populated_database(tmp_path_factory)


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_every_command_has_an_example_in_its_help(name):
    result = cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout and f"see-persistence {name}" in result.stdout
    assert "--db" in result.stdout


def test_the_top_level_help_lists_every_command_and_the_exit_codes():
    result = cli("--help")
    assert result.returncode == 0
    for name in COMMAND_NAMES:
        assert name in result.stdout
    assert "0 ok, 1 error, 2 usage, 3 lease held by another live writer, 4 lease lost" in result.stdout
    assert "--log-format" in result.stdout


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_writer_throughput_wal_instances_schema_and_rows(populated):
    wait_for_counters(populated.db, populated.writer.pid)
    result = cli("status", "--db", populated.db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"pid {populated.writer.pid}" in out and "alive" in out and "up " in out
    assert "operations/s" in out and "ms mean" in out and "per batch" in out
    assert "WAL " in out
    assert f"schema    version {schema.SCHEMA_VERSION}" in out
    assert "0 dead letters, 0 dropped" in out
    instance_line = next(line for line in out.splitlines() if populated.report["instance_id"] in line)
    assert "ended" in instance_line and "4 workflows" in instance_line
    assert "workflow_executions 4" in out and "task_executions 8" in out and "audit_events 8" in out


def test_status_json_has_every_part(populated):
    wait_for_counters(populated.db, populated.writer.pid)
    result = cli("status", "--db", populated.db, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    writer = report["writer"]
    assert writer["pid"] == populated.writer.pid and writer["alive"] is True and writer["state"] == "alive"
    assert writer["endpoint"].startswith("ipc://") and writer["epoch"] >= 1 and writer["uptime_s"] >= 0
    metrics = report["writer_metrics"]
    assert metrics["current"] is True and metrics["pid"] == populated.writer.pid
    assert metrics["totals"]["operations"] > 0
    for key in ("operations_per_s", "batch_operations_mean", "commit_us_mean", "commit_us_max"):
        assert isinstance(metrics[key], int)
    assert report["dead_letters"] == {"count": 0, "dropped": 0}
    assert isinstance(report["wal_bytes"], int)
    assert report["schema"] == {"version": schema.SCHEMA_VERSION, "code_version": schema.SCHEMA_VERSION}
    ended = {i["id"]: i for i in report["other_instances"]}
    assert ended[populated.report["instance_id"]]["workflows"] == 4
    assert ended[populated.report["instance_id"]]["state"] == "ended"
    assert report["rows"]["workflow_executions"] == 4 and report["rows"]["task_executions"] == 8


def test_status_of_a_file_no_writer_has_served(tmp_path):
    db = tmp_path / "fresh.db"
    make_unwritten_db(db)
    result = cli("status", "--db", db)
    assert result.returncode == 0, result.stderr
    assert "none has ever run" in result.stdout and "no counters published" in result.stdout
    assert "0 live" in result.stdout
    as_json = json.loads(cli("status", "--db", db, "--json").stdout)
    assert as_json["writer"] is None and as_json["writer_metrics"] is None


def test_status_lists_a_live_instance_with_its_pid(populated):
    with Client(populated.db) as client:  # registers, records nothing: other tests count workflows
        assert client.flush(timeout=20)
        report = json.loads(cli("status", "--db", populated.db, "--json").stdout)
        live = {i["id"]: i for i in report["live_instances"]}
        assert live[client.instance_id]["pid"] == os.getpid() and live[client.instance_id]["workflows"] == 0
        text = cli("status", "--db", populated.db).stdout
        line = next(line for line in text.splitlines() if client.instance_id in line)
        assert line.split()[0] == "live" and f"pid {os.getpid()}" in line


def test_status_takes_the_database_from_the_environment(populated):
    env = {**os.environ, "SEE_PERSISTENCE_DB": str(populated.db)}
    result = cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == str(populated.db)


# -- tail -----------------------------------------------------------------------------------------


POPULATED_EVENTS = [f"pop-wf-{w}-event-{e}" for w in range(4) for e in range(2)]
"""The messages of the audit events the populating client recorded, in its order."""


def test_tail_prints_the_last_events_oldest_first(populated):
    # --type step: the follow tests below add events of their own to this database
    result = cli("tail", "--db", populated.db, "-n", "3", "--type", "step")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == POPULATED_EVENTS[-3:]
    stamp, event_type, workflow_id, _ = lines[0].split("  ")
    assert stamp.endswith("+00:00") and event_type == "step"
    assert workflow_id in populated.report["workflow_ids"]
    every = cli("tail", "--db", populated.db, "--type", "step").stdout.splitlines()
    assert len(every) == 8  # all of them: fewer than the default 10


def test_tail_json_and_filters(populated):
    first = populated.report["workflow_ids"][0]
    result = cli("tail", "--db", populated.db, "--json", "--workflow", first)
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert [e["message"] for e in events] == ["pop-wf-0-event-0", "pop-wf-0-event-1"]
    assert all(e["workflow_id"] == first and e["event_type"] == "step" for e in events)
    assert events[1]["data"] == {"e": 1} and events[0]["instance_id"] == populated.report["instance_id"]
    assert cli("tail", "--db", populated.db, "--type", "no-such-type").stdout == ""
    assert cli("tail", "--db", populated.db, "-n", "0").stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_follow_sees_an_event_committed_after_it_started(populated, signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "tail", "--follow", "--db", str(populated.db), "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = LineReader(process)
        lines.wait_for("+00:00")  # its first output: the last event so far
        message = f"committed after tail started ({signal.Signals(signum).name})"
        with Client(populated.db) as client:  # an event only: the other tests count workflows
            client.log_audit_event("follow", message)
            assert client.flush(timeout=20)
        lines.wait_for(message)
        process.send_signal(signum)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# -- query ----------------------------------------------------------------------------------------


def test_query_prints_an_aligned_table_with_column_names(populated):
    result = cli(
        "query",
        "--db",
        populated.db,
        "SELECT workflow_name AS name, status, 12345 AS number FROM workflow_executions ORDER BY name",
    )
    assert result.returncode == 0, result.stderr
    header, rule, *rows, footer = result.stdout.splitlines()
    assert header.split() == ["name", "status", "number"]
    assert set(rule) == {"-", " "}
    assert [r.split()[0] for r in rows] == [f"pop-wf-{n}" for n in range(4)]
    assert len({len(r) for r in rows}) == 1  # aligned
    assert header.index("status") == rows[0].index("completed")
    assert footer == "(4 rows)"


def test_query_json_and_csv(populated):
    sql = "SELECT id, workflow_name, success, NULL AS blank FROM workflow_executions ORDER BY id"
    as_json = json_lines(cli("query", "--db", populated.db, "--json", sql).stdout)
    assert [row["id"] for row in as_json] == sorted(populated.report["workflow_ids"])
    assert as_json[0]["success"] == 1 and as_json[0]["blank"] is None
    result = cli("query", "--db", populated.db, "--csv", sql)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["id", "workflow_name", "success", "blank"]
    assert len(rows) == 5 and rows[1][2] == "1" and rows[1][3] == ""


def test_query_binds_parameters(populated):
    result = cli(
        "query",
        "--db",
        populated.db,
        "--json",
        "SELECT COUNT(*) AS n FROM task_executions WHERE workflow_id = ?",
        "-p",
        populated.report["workflow_ids"][0],
    )
    assert json_lines(result.stdout) == [{"n": 2}]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM workflow_executions",
        "UPDATE task_executions SET status = 'failed'",
        "DROP TABLE audit_events",
        "PRAGMA journal_mode = DELETE",
        "ATTACH DATABASE ':memory:' AS other",
    ],
)
def test_query_refuses_writes_in_one_line(populated, sql):
    result = cli("query", "--db", populated.db, sql)
    assert_one_line_error(result, 1, "refused", "read-only")
    assert counts(populated.db)["workflow_executions"] == 4


def test_query_reports_bad_sql_in_one_line(populated):
    assert_one_line_error(cli("query", "--db", populated.db, "SELEC nothing"), 1, "syntax error")
    assert_one_line_error(cli("query", "--db", populated.db, "SELECT 1; SELECT 2"), 1, "one statement")
    assert_one_line_error(cli("query", "--db", populated.db, "SELECT * FROM nope"), 1, "no such table")


# -- check ----------------------------------------------------------------------------------------


def test_check_passes_on_a_healthy_file(populated):
    result = cli("check", "--db", populated.db)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "integrity",
        "foreign_keys",
        "schema",
        "permissions",
        "lease",
    ]
    assert all(line.startswith("ok") for line in lines)
    assert f"pid {populated.writer.pid}" in lines[4]
    as_json = json_lines(cli("check", "--db", populated.db, "--json").stdout)
    assert [c["ok"] for c in as_json] == [True] * 5


def test_check_warns_about_a_dead_writer_that_kept_the_lease_but_passes(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    writer.signal(signal.SIGKILL)
    writer.wait_exit()
    result = cli("check", "--db", db)
    assert result.returncode == 0, result.stdout
    lease = result.stdout.splitlines()[-1]
    assert lease.startswith("ok") and "warning" in lease and f"pid {writer.pid}" in lease


# -- logging --------------------------------------------------------------------------------------


def test_log_format_json_writes_one_object_per_line_on_stderr(db):
    process = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "--log-format", "json", "writer", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reader = Reader(db)

        def holding() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                status = reader.get_writer_status()
            except FileNotFoundError:
                return False
            return status is not None and status.alive and status.pid == process.pid

        wait_until(holding, 20, "the writer to hold the lease")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    records = json_lines(err)
    assert records, "the writer logged nothing"
    for record in records:
        assert set(record) >= {"time", "level", "logger", "pid", "message"}
        assert record["pid"] == process.pid and record["time"].endswith("+00:00")
    assert any(r["logger"] == "see_persistence.writer" and "serving" in r["message"] for r in records)
    assert any(r["level"] == "INFO" for r in records)


def test_the_writer_command_collects_young_objects_less_often_and_freezes_what_startup_loaded():
    # In a fresh interpreter: the test process's own collector stays as it is.
    code = (
        "import gc\n"
        "from see_persistence.commands.writer import WRITER_GC_YOUNGEST_THRESHOLD, tune_garbage_collector\n"
        "before = gc.get_threshold()\n"
        "tune_garbage_collector()\n"
        "after = gc.get_threshold()\n"
        "assert after == (WRITER_GC_YOUNGEST_THRESHOLD, *before[1:]), (before, after)\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
