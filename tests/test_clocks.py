"""Liveness on the boot clock and the boot id, not the wall clock and the host name; and times
within a record that never run backwards (docs/DESIGN_CLOCKS.md).

The machine's clock cannot be stepped here, so a process's wall clock is shifted instead:
leases.WALL_CLOCK_OFFSET_ENV moves the wall clock its lease code reads. A host name that
changed is a row that names another host, as the process reported it before the change.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from conftest import FAST_LEASE_STALE_S, WriterProcess, wait_until

from see_persistence import Reader, Status, leases, locations
from see_persistence.protocol import timestamps
from see_persistence.writer.lease import HEARTBEAT_INTERVAL_S, LEASE_STALE_AFTER_S, WriterLease
from see_persistence.writer.storage import open_write_connection

RENAMED_HOST = "the-name-it-had-before"
EARLIER_BOOT = "00000000-0000-4000-8000-000000000000"

pytestmark = pytest.mark.skipif(leases.boot_id() is None, reason="needs a boot id (Linux)")


def _with_wall_clock_offset(seconds: float) -> dict[str, str]:
    return {**os.environ, leases.WALL_CLOCK_OFFSET_ENV: str(seconds)}


def _kill(writer: WriterProcess) -> None:
    writer.signal(signal.SIGKILL)
    writer.process.wait(timeout=10)  # reaped: its pid is gone, not a zombie


def _heartbeats_seen(reader: Reader, standby: WriterProcess, count: int) -> None:
    """Wait until the holder has renewed its lease `count` times, the standby still waiting."""
    seen: set[int] = set()

    def enough() -> bool:
        assert standby.process.poll() is None, f"the standby exited:\n{standby.log()}"
        seen.add(reader.query("SELECT heartbeat_boot_ns FROM writer_lease")[0][0])
        return len(seen) >= count

    wait_until(enough, count * HEARTBEAT_INTERVAL_S + 20, f"{count} heartbeats")


class Gui:
    """A process registered as a GUI instance by raw hello, through its own PUSH socket."""

    def __init__(self, db: Path, instance_id: str, host: str) -> None:
        self.instance_id = instance_id
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        self.pid = self.process.pid
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.connect(locations.endpoints_for(db).pull)
        self._seq = 0
        identity = leases.identity_of(self.pid)
        self.send(("hello", {"pid": self.pid, "process_create_time": identity.create_time, "host": host}))

    def send(self, *operations: tuple[str, dict[str, Any]], at_us: int | None = None) -> None:
        """Send operations in one message; each payload gets `at_us` unless it has one."""
        at = time.time_ns() // 1000 if at_us is None else at_us
        self._seq += 1
        ops = [[name, {"at_us": at, **payload}] for name, payload in operations]
        self._socket.send(msgpack.packb([1, self.instance_id, self._seq, ops]))

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        """Kill the process and close the socket."""
        self.kill()
        self._socket.close(linger=0)
        self._context.term()


@pytest.fixture
def guis() -> Iterator[Any]:
    """Start Gui processes: `guis(db, instance_id, host)`; all are killed at teardown."""
    started: list[Gui] = []

    def start(db: Path, instance_id: str, host: str) -> Gui:
        gui = Gui(db, instance_id, host)
        started.append(gui)
        return gui

    yield start
    for gui in started:
        gui.close()


def _workflow(wid: str) -> tuple[str, dict[str, Any]]:
    return ("create_workflow", {"id": wid, "workflow_name": wid, "metadata": "{}"})


def _status(op: str, rid: str, status: str, at_us: int) -> tuple[str, dict[str, Any]]:
    return (op, {"id": rid, "status": status, "error_message": None, "at_us": at_us})


def _write(db: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """One statement in a transaction of its own, beside the writer (as another program would)."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


# -- a wall-clock step is no silence ------------------------------------------------------------


def test_a_standby_whose_wall_clock_stepped_forward_leaves_a_live_writer_alone(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    # A minute ahead: on the wall clock the writer's every heartbeat looks a minute old.
    standby = writers(db, "--standby", env=_with_wall_clock_offset(60))
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to stand by")
    reader = Reader(db)
    _heartbeats_seen(reader, standby, 6)
    status = reader.get_writer_status()
    assert status.pid == writer.pid and status.alive and status.epoch == 1
    assert status.heartbeat_age_s is not None and status.heartbeat_age_s < LEASE_STALE_AFTER_S
    assert "took over" not in standby.log()
    # It does take over from a writer that died.
    _kill(writer)
    standby.wait_holding_lease(timeout=20)
    assert reader.get_writer_status().epoch == 2


@pytest.mark.usefixtures("fast_lease")
def test_a_frozen_writer_is_replaced_though_the_standbys_wall_clock_stepped_back(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    # An hour behind: on the wall clock the writer's last heartbeat is an hour in the future.
    standby = writers(db, "--standby", env=_with_wall_clock_offset(-3600))
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to stand by")
    writer.signal(signal.SIGSTOP)
    try:
        standby.wait_holding_lease(timeout=FAST_LEASE_STALE_S + 20)
    finally:
        writer.signal(signal.SIGCONT)
    assert writer.wait_exit(timeout=20) == 4  # it lost the lease: fenced off


def test_a_nap_of_the_whole_machine_is_no_silence_of_its_writer(db, writers, monkeypatch):
    # CLOCK_BOOTTIME counts a suspend; every process slept through it, the standby too. A
    # standby that saw the heartbeat just before the nap counts only what it watched since.
    writer = writers(db)
    writer.wait_holding_lease()
    conn = open_write_connection(db)
    standby = WriterLease(conn, leases.current_process(), "ipc:///not-bound")
    writer.signal(signal.SIGSTOP)  # its heartbeat stands still from here
    try:
        assert standby.try_acquire(leases.wall_clock_us()) is not None  # the look before the nap
        boot_time_ns = leases.boot_time_ns
        monkeypatch.setattr(leases, "boot_time_ns", lambda: boot_time_ns() + 3600 * 1_000_000_000)
        holder = standby.try_acquire(leases.wall_clock_us())  # the look after an hour's nap
        monkeypatch.undo()
    finally:
        writer.signal(signal.SIGCONT)
        conn.close()
    assert holder is not None and holder.pid == writer.pid
    assert Reader(db).get_writer_status().epoch == 1


# -- a host name that changed ------------------------------------------------------------------


def test_a_killed_writer_recorded_under_an_old_host_name_is_dead_and_replaced(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    # The machine was called something else when the writer took the lease.
    _write(db, "UPDATE writer_lease SET host = ?", (RENAMED_HOST,))
    reader = Reader(db)
    status = reader.get_writer_status()
    assert status.host == RENAMED_HOST and status.boot_id == leases.boot_id() and status.alive
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to stand by")
    standby.signal(signal.SIGSTOP)  # else it may take the lease before the status read below
    _kill(writer)
    assert reader.get_writer_status().alive is False  # what a spawning GUI goes by
    standby.signal(signal.SIGCONT)
    standby.wait_holding_lease(timeout=20)


def test_a_client_that_may_spawn_replaces_a_killed_writer_of_an_old_host_name(db, writers, clients):
    writer = writers(db)
    writer.wait_holding_lease()
    _write(db, "UPDATE writer_lease SET host = ?", (RENAMED_HOST,))
    _kill(writer)
    report = clients(db, "--spawn-writer", "--workflows", "2").finish(timeout=90)
    reader = Reader(db)
    spawned = reader.get_writer_status()
    try:
        assert report["flushed"] is True
        assert spawned.alive and spawned.pid != writer.pid and spawned.host == leases.host_name()
    finally:
        if spawned.pid != writer.pid:  # detached from us: end it by its pid
            psutil.Process(spawned.pid).terminate()
            psutil.Process(spawned.pid).wait(timeout=20)


def test_an_instance_of_an_old_host_name_is_seen_alive_then_abandoned_when_killed(db, writers, guis):
    writers(db).wait_holding_lease()
    gui = guis(db, "gui-renamed", RENAMED_HOST)
    ahead_us = time.time_ns() // 1000 + 3600 * 1_000_000  # its clock an hour ahead of the writer's
    gui.send(_workflow("w-renamed"), _status("update_workflow_status", "w-renamed", "running", ahead_us))
    reader = Reader(db)
    wait_until(lambda: _status_is(reader, "w-renamed", Status.RUNNING), 20, "the running workflow")
    instance = reader.get_instance("gui-renamed")
    assert instance.host == RENAMED_HOST and instance.boot_id == leases.boot_id()  # the writer's
    assert "gui-renamed" in {i.id for i in reader.get_active_instances()}
    gui.kill()

    def abandoned() -> bool:
        return _status_is(reader, "w-renamed", Status.FAILED)

    wait_until(abandoned, 10, "the dead instance's workflow to be abandoned")
    run = reader.get_workflow("w-renamed")
    assert run.error_message.startswith("abandoned:") and run.completed_at >= run.started_at
    assert reader.get_instance("gui-renamed").state == "dead"
    assert "gui-renamed" not in {i.id for i in reader.get_active_instances()}


# -- an earlier boot of this machine -----------------------------------------------------------


def test_an_instance_of_an_earlier_boot_is_dead_though_its_pid_runs_now(db, writers, guis):
    writers(db).wait_holding_lease()
    gui = guis(db, "gui-before-reboot", leases.host_name())
    gui.send(
        _workflow("w-before"),
        _status("update_workflow_status", "w-before", "running", time.time_ns() // 1000),
    )
    reader = Reader(db)
    wait_until(lambda: _status_is(reader, "w-before", Status.RUNNING), 20, "the running workflow")
    # As if the row were written before a reboot, and its pid (with that create time) ran again.
    _write(db, "UPDATE instances SET boot_id = ? WHERE id = 'gui-before-reboot'", (EARLIER_BOOT,))
    assert "gui-before-reboot" not in {i.id for i in reader.get_active_instances()}
    wait_until(
        lambda: _status_is(reader, "w-before", Status.FAILED),
        10,
        "the earlier boot's work abandoned",
    )
    assert reader.get_instance("gui-before-reboot").state == "dead"
    assert gui.process.poll() is None  # its pid still runs: the boot decided


def test_a_lease_of_an_earlier_boot_is_free_though_its_pid_runs_now(db, writers):
    first = writers(db)
    first.wait_holding_lease()
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    me = leases.current_process()  # a live pid, with its true create time, of "the earlier boot"
    now = timestamps.format_us(time.time_ns() // 1000)
    _write(
        db,
        "UPDATE writer_lease SET pid = ?, process_create_time = ?, host = ?, epoch = 7, heartbeat_at = ?,"
        " released_at = NULL, boot_id = ?, heartbeat_boot_ns = ?",
        (me.pid, me.create_time, me.host, now, EARLIER_BOOT, leases.boot_time_ns()),
    )
    reader = Reader(db)
    assert reader.get_writer_status().alive is False
    second = writers(db)  # not a standby: it exits 3 if it thinks the lease is held
    second.wait_holding_lease()
    assert reader.get_writer_status().epoch == 8


# -- completed_at >= started_at, whatever the caller's clock did -----------------------------------


def test_a_record_never_completes_before_it_started_when_the_callers_clock_steps_back(db, writers, guis):
    writers(db).wait_holding_lease()
    gui = guis(db, "gui-stepping", leases.host_name())
    t0 = time.time_ns() // 1000
    t_run, t_done = t0 + 60_000_000, t0 + 30_000_000  # completed "before" it ran: a step back
    gui.send(
        _workflow("w-step"),
        _status("update_workflow_status", "w-step", "running", t_run),
        ("create_task", {"id": "t-step", "workflow_id": "w-step", "task_name": "t", "execution_order": 1}),
        (
            "update_task_status",
            {"id": "t-step", "status": "running", "output": None, "error_message": None, "at_us": t_run},
        ),
        (
            "update_task_status",
            {"id": "t-step", "status": "completed", "output": "ok", "error_message": None, "at_us": t_done},
        ),
        _status("update_workflow_status", "w-step", "completed", t_done),
        # Completed first (no start), then set running with a time after that: it started no later.
        _workflow("w-late-start"),
        _status("update_workflow_status", "w-late-start", "completed", t_done),
        _status("update_workflow_status", "w-late-start", "running", t_run),
        at_us=t0,
    )
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow("w-late-start"), 20, "the operations to apply")  # one batch
    run = reader.get_workflow("w-step")
    [task] = reader.get_tasks_for_workflow("w-step")
    for record in (run, task):
        assert record.status == Status.COMPLETED
        assert record.started_at == record.completed_at == _moment(t_run)
    late = reader.get_workflow("w-late-start")
    assert late.started_at == late.completed_at == _moment(t_done)


def test_a_start_in_another_writers_format_is_compared_as_a_time(db, writers, guis):
    writers(db).wait_holding_lease()
    gui = guis(db, "gui-foreign", leases.host_name())
    t0 = time.time_ns() // 1000
    gui.send(_workflow("w-foreign"), at_us=t0)
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow("w-foreign"), 20, "the workflow")
    # SQLite's CURRENT_TIMESTAMP form, a minute after t0: as text it sorts before t0's form.
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0 / 1e6 + 60))
    _write(
        db,
        "UPDATE workflow_executions SET status = 'running', started_at = ? WHERE id = 'w-foreign'",
        (later,),
    )
    gui.send(_status("update_workflow_status", "w-foreign", "completed", t0 + 1_000_000))
    wait_until(lambda: _status_is(reader, "w-foreign", Status.COMPLETED), 20, "the completion")
    assert reader.query("SELECT completed_at FROM workflow_executions WHERE id = 'w-foreign'") == [(later,)]


def test_list_workflows_orders_by_the_callers_created_at(db, writers, guis):
    # The documented consequence of a backward step (docs/DESIGN_CLOCKS.md): the row created
    # second, by a clock stepped back, lists as the older one.
    writers(db).wait_holding_lease()
    gui = guis(db, "gui-order", leases.host_name())
    t0 = time.time_ns() // 1000
    gui.send(_workflow("w-first"), at_us=t0)
    gui.send(_workflow("w-second"), at_us=t0 - 60_000_000)
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow("w-second"), 20, "both workflows")
    assert [w.id for w in reader.list_workflows()] == ["w-first", "w-second"]


def _status_is(reader: Reader, workflow_id: str, status: Status) -> bool:
    run = reader.get_workflow(workflow_id)
    return run is not None and run.status == status


def _moment(unix_us: int) -> Any:
    return timestamps.parse(timestamps.format_us(unix_us))
