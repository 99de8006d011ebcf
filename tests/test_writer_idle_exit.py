"""A writer started with --exit-when-idle (as a GUI spawns one) leaves cleanly once no live
GUI instance and no message has been seen for that long, and not while a GUI still runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli
from conftest import ClientProcess, WriterProcess, wait_until

from see_persistence import Reader, Status

IDLE_S = 1.0
# The writer looks once per liveness sweep (1 s), so it leaves between IDLE_S and IDLE_S + 1 s
# after the last sign of need; the rest of the bound is for a loaded machine.
EXIT_DEADLINE_S = 20.0
EXIT_LINE = "no live instance and no message"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database path in a directory that exists (the writer creates none but ~/.s_e_e)."""
    directory = tmp_path / "data"
    directory.mkdir()
    return directory / "workflows.db"


def _registered_live(db: Path, instance_id: str) -> None:
    """Wait until the writer committed the client's registration (its instance is live)."""
    with Reader(db) as reader:
        wait_until(
            lambda: any(i.id == instance_id for i in reader.get_active_instances()),
            20,
            f"instance {instance_id} to be registered live",
        )


def _stays_running(writer: WriterProcess, seconds: float) -> None:
    """The writer has not exited `seconds` from now: a wait on its exit that must time out."""
    with pytest.raises(subprocess.TimeoutExpired):
        writer.process.wait(timeout=seconds)
    assert EXIT_LINE not in writer.log()


def _started_client(db: Path, clients, *args: str) -> tuple[ClientProcess, str]:
    """A client that has registered (its hello is queued) and waits on stdin before recording."""
    client = clients(db, "--wait-before-record", *args)
    event = client.read_event()
    assert event["phase"] == "started", event
    return client, str(event["instance_id"])


def test_the_writer_leaves_once_the_last_client_is_gone(db, writers, clients) -> None:
    # The client comes first, as a GUI that spawns its writer: the writer must not leave
    # before the client it was started for has said hello.
    client, instance_id = _started_client(db, clients, "--workflows", "1", "--tasks", "1")
    writer = writers(db, "--exit-when-idle", str(IDLE_S))
    writer.wait_holding_lease()
    _registered_live(db, instance_id)
    client.proceed()
    report = client.finish()
    assert report["flushed"] is True
    assert writer.wait_exit(timeout=EXIT_DEADLINE_S) == 0, writer.log()
    log = writer.log()
    assert EXIT_LINE in log and "released the writer lease" in log
    with Reader(db) as reader:
        runs = reader.get_workflows_for_instance(instance_id)
        assert [r.status for r in runs] == [Status.COMPLETED]
        assert len(reader.get_tasks_for_workflow(runs[0].id)) == 1
        status = reader.get_writer_status()
        assert status is not None and status.released is not None


def test_the_writer_stays_while_a_client_is_alive_and_idle(db, writers, clients) -> None:
    client, instance_id = _started_client(db, clients, "--workflows", "1", "--wait-after-record")
    writer = writers(db, "--exit-when-idle", str(IDLE_S))
    writer.wait_holding_lease()
    _registered_live(db, instance_id)
    client.proceed()
    assert client.read_event()["phase"] == "recorded"
    _stays_running(writer, 4 * IDLE_S)  # four idle periods with a live, silent client
    client.proceed()
    assert client.finish()["flushed"] is True
    assert writer.wait_exit(timeout=EXIT_DEADLINE_S) == 0, writer.log()


def test_a_client_killed_outright_does_not_keep_the_writer(db, writers, clients) -> None:
    # kill -9 sends no goodbye: the instance row stays 'live' until the sweep finds its pid gone.
    client = clients(db, "--workflows", "0", "--leave-running")
    assert client.read_event()["phase"] == "started"  # registered before the writer starts
    writer = writers(db, "--exit-when-idle", str(IDLE_S))
    writer.wait_holding_lease()
    recorded = client.read_event()
    assert recorded["phase"] == "recorded" and recorded["flushed"] is True
    _stays_running(writer, 2 * IDLE_S)
    client.kill()
    assert writer.wait_exit(timeout=EXIT_DEADLINE_S) == 0, writer.log()
    with Reader(db) as reader:
        abandoned = reader.get_workflow(recorded["running_workflow"])
        assert abandoned is not None and abandoned.status == Status.FAILED


def test_without_the_flag_the_writer_runs_on_with_no_client(db, writers) -> None:
    writer = writers(db)
    writer.wait_holding_lease()
    _stays_running(writer, 3.0)


def test_a_nonpositive_idle_time_is_a_usage_error(db) -> None:
    for value in ("0", "-1", "soon", "nan"):
        result = cli("writer", "--db", db, "--exit-when-idle", value, timeout=30)
        assert_one_line_error(result, 2, "--exit-when-idle")
    assert not db.exists()
