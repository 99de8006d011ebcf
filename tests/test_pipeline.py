"""The end-to-end pipeline with real processes: writers, clients, sockets and files.

The tests that ask for `database` run over ipc and on PostgreSQL (tests/conftest.py), and over
TCP with CURVE too where test_tcp_transport.py does not check the same over TCP already (exact
counts and order, flush, a kill -9 mid-stream and a standby's takeover): a client that records
before any writer exists, and a writer stopped by SIGTERM. The rest stay on one SQLite file
over ipc: spawning a writer (covered over TCP in test_tcp_transport.py; a Client never spawns
one for a URL), the lease race (the PostgreSQL race is test_postgresql_writer.py's), the demo
and the commands' output (`status` on PostgreSQL is test_postgresql_cli.py's).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Database, wait_until

from see_persistence import Reader, Status


def _counts(db: Path) -> dict[str, int]:
    return Reader(db).count_rows()


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # sqlite-tcp: test_tcp_transport.py
def test_several_clients_recording_at_once_commit_exact_counts(database: Database, writers, clients):
    db = database.db
    writer = writers(db)
    writer.wait_holding_lease()
    procs = [
        clients(db, "--label", f"c{n}", "--workflows", "15", "--tasks", "3", "--logs", "2", "--events", "2")
        for n in range(4)
    ]
    reports = [p.finish() for p in procs]
    assert all(r["flushed"] for r in reports)
    counts = database.counts()
    assert counts["workflow_executions"] == 4 * 15
    assert counts["task_executions"] == 4 * 15 * 3
    assert counts["audit_events"] == 4 * 15 * 2
    assert counts["dead_letters"] == 0
    reader = database.reader
    for report in reports:
        runs = reader.get_workflows_for_instance(report["instance_id"])
        assert len(runs) == 15
        assert {r.status for r in runs} == {Status.COMPLETED}
        tasks = reader.get_tasks_for_workflow(runs[0].id)
        assert [t.execution_order for t in tasks] == [1, 2, 3]
        name = tasks[0].task_name
        assert tasks[0].logs == [f"{name}-line-0", f"{name}-line-1"]
        assert tasks[0].output == f"{name}-output"
        assert tasks[0].success is True
    instances = {i.id: i for i in reader.get_instances()}
    for report in reports:
        assert instances[report["instance_id"]].state == "ended"


def test_a_client_that_sends_before_any_writer_exists_loses_nothing(database: Database, writers, clients):
    db = database.db
    client = clients(db, "--label", "early", "--workflows", "10", "--tasks", "2", "--wait-after-record")
    assert client.read_event()["phase"] == "started"
    recorded = client.read_event()
    assert recorded["phase"] == "recorded"
    if database.sqlite:
        assert not Path(db).exists()  # nobody has even created the file yet
    writer = writers(db)
    writer.wait_holding_lease()
    client.proceed()
    report = client.finish()
    assert report["flushed"] is True
    reader = database.reader
    assert {w.id for w in reader.list_workflows(limit=100)} == set(recorded["workflow_ids"])
    assert database.counts()["task_executions"] == 20


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # sqlite-tcp: test_tcp_transport.py
def test_operations_of_one_client_apply_in_the_order_called(database: Database, writers, clients):
    db = database.db
    writers(db).wait_holding_lease()
    report = clients(db, "--workflows", "300", "--quick-succession").finish()
    assert report["flushed"]
    runs = database.reader.get_workflows_for_instance(report["instance_id"], limit=None)
    assert len(runs) == 300
    for run in runs:
        assert run.status == Status.COMPLETED
        assert run.started_at is not None and run.completed_at is not None
        assert run.started_at <= run.completed_at
        assert run.success is True


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # sqlite-tcp: test_tcp_transport.py
def test_flush_makes_writes_visible_to_a_reader_in_another_process(database: Database, writers, clients):
    db = database.db
    writers(db).wait_holding_lease()
    client = clients(db, "--workflows", "5", "--wait-after-record")
    client.read_event()
    client.read_event()
    client.proceed()
    report = client.finish()
    assert report["flushed"] is True
    # A separate process opens its own read-only connection right after flush returned.
    code = (
        "import sys; from see_persistence import Reader; "
        f"ids = {report['workflow_ids']!r}; r = Reader(sys.argv[1]); "
        "sys.exit(0 if all(r.get_workflow(i) is not None for i in ids) else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code, str(db)], timeout=30).returncode == 0


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # the lease is the backend's, not the transport's
def test_a_second_writer_exits_with_code_3_and_names_the_holder(database: Database, writers):
    db = database.db
    first = writers(db)
    first.wait_holding_lease()
    second = writers(db)
    assert second.wait_exit() == 3
    assert f"pid {first.pid}" in second.log()
    assert first.process.poll() is None


def test_two_writers_racing_leave_exactly_one(db, writers):
    racers = [writers(db) for _ in range(3)]
    wait_until(lambda: sum(w.process.poll() is not None for w in racers) == 2, 20, "two racers to exit")
    losers = [w for w in racers if w.process.poll() is not None]
    winner = next(w for w in racers if w.process.poll() is None)
    assert [w.process.returncode for w in losers] == [3, 3]
    winner.wait_holding_lease()


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # sqlite-tcp: test_tcp_transport.py
def test_a_standby_takes_over_when_the_writer_is_killed(database: Database, writers, clients):
    db = database.db
    active = writers(db)
    active.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
    epoch = database.reader.get_writer_status().epoch
    active.signal(signal.SIGKILL)
    active.wait_exit()
    standby.wait_holding_lease()
    status = database.reader.get_writer_status()
    assert status.epoch == epoch + 1
    report = clients(db, "--workflows", "3").finish()
    assert report["flushed"] is True
    assert database.counts()["workflow_executions"] == 3


def test_sigterm_commits_what_was_received_and_releases_the_lease(database: Database, writers, clients):
    db = database.db
    writer = writers(db)
    writer.wait_holding_lease()
    client = clients(db, "--workflows", "200", "--tasks", "2", "--events", "3", "--wait-after-record")
    client.read_event()
    client.read_event()
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    status = database.reader.get_writer_status()
    assert status.released is not None and status.alive is False
    assert "released the writer lease" in writer.log()
    # What the stopped writer had not received, a new writer gets by resend: nothing lost or doubled.
    writers(db).wait_holding_lease()
    client.proceed()
    assert client.finish()["flushed"] is True
    counts = database.counts()
    assert counts["workflow_executions"] == 200
    assert counts["task_executions"] == 400
    assert counts["audit_events"] == 600


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # sqlite-tcp: test_tcp_transport.py
def test_a_writer_killed_mid_stream_loses_nothing_and_doubles_nothing(database: Database, writers, clients):
    db = database.db
    first = writers(db)
    first.wait_holding_lease()
    client = clients(db, "--workflows", "400", "--tasks", "2", "--logs", "1", "--events", "1")
    client.read_event()
    wait_until(lambda: database.counts()["workflow_executions"] > 20, 20, "the first commits")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    writers(db).wait_holding_lease()
    report = client.finish(timeout=90)
    assert report["flushed"] is True
    counts = database.counts()
    assert counts["workflow_executions"] == 400
    assert counts["task_executions"] == 800
    assert counts["audit_events"] == 400
    assert counts["dead_letters"] == 0
    reader = database.reader
    for wid in report["workflow_ids"][::37]:
        tasks = reader.get_tasks_for_workflow(wid)
        assert [len(t.logs) for t in tasks] == [1, 1]  # a log line applied twice would show here


def test_spawn_writer_from_racing_clients_leaves_one_writer(db, clients):
    import psutil

    procs = [clients(db, "--spawn-writer", "--label", f"s{n}", "--workflows", "4") for n in range(4)]
    reports = [p.finish(timeout=90) for p in procs]
    assert all(r["flushed"] for r in reports)
    assert _counts(db)["workflow_executions"] == 16
    status = Reader(db).get_writer_status()
    assert status is not None and status.alive

    def writers_for_db() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "writer" in cmd and str(db) in cmd:
                found.append(proc)
        return found

    wait_until(lambda: len(writers_for_db()) == 1, 20, "the losing writers to exit")
    survivor = writers_for_db()[0]
    assert survivor.pid == status.pid
    survivor.terminate()
    survivor.wait(timeout=20)


def test_the_demo_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", "demo", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "writer stopped cleanly (exit code 0)" in result.stdout
    assert "4 workflows: 3 completed, 1 failed" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["writer", "--help"], ["status", "--help"], ["demo", "--help"]])
def test_help_explains_each_command_with_an_example(argv):
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", *argv], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "example" in result.stdout


def test_status_shows_the_writer_instances_and_row_counts(db, writers, clients):
    writer = writers(db)
    writer.wait_holding_lease()
    clients(db, "--workflows", "2").finish()
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", "status", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"pid {writer.pid}" in result.stdout and "alive" in result.stdout
    assert "workflow_executions 2" in result.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "see_persistence", "status", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    import json

    report = json.loads(as_json.stdout)
    assert report["writer"]["pid"] == writer.pid and report["writer"]["alive"] is True
    assert report["rows"]["task_executions"] == 4


def test_status_on_a_missing_file_is_one_line_and_nonzero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", "status", "--db", str(tmp_path / "nope.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "nope.db" in result.stderr and "Traceback" not in result.stderr


def test_a_client_that_may_spawn_replaces_a_writer_that_died(db, clients):
    import psutil

    client = clients(db, "--spawn-writer", "--workflows", "30", "--wait-before-record")
    client.read_event()
    reader = Reader(db)
    first = wait_until(lambda: _alive_writer(reader), 30, "the spawned writer")
    psutil.Process(first.pid).kill()
    wait_until(lambda: not psutil.pid_exists(first.pid) or _is_zombie(first.pid), 10, "the kill")
    client.proceed()
    report = client.finish(timeout=90)
    assert report["flushed"] is True
    second = reader.get_writer_status()
    assert second.alive and second.pid != first.pid and second.epoch > first.epoch
    assert _counts(db)["workflow_executions"] == 30
    psutil.Process(second.pid).terminate()
    psutil.Process(second.pid).wait(timeout=20)


def _alive_writer(reader: Reader):
    try:
        status = reader.get_writer_status()
    except FileNotFoundError:
        return None
    return status if status is not None and status.alive else None


def _is_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
