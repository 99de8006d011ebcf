"""Instances on the PostgreSQL writer: host ids, the liveness sweep, remote heartbeats, retention.

Real writer processes on the session's server (tests/conftest_postgres.py), raw CURVE senders
(tests/test_postgresql_writer.py's helpers), real processes whose pid an instance registers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import test_postgresql_writer as pg_writer_tests
import zmq
from conftest import wait_until
from test_postgresql_writer import (
    AT_US,
    connect_curve,
    create_task,
    create_workflow,
    query,
    status_fields,
    wait_serving,
    workflow_status,
)

from see_persistence import Reader, leases
from see_persistence.protocol import codec

psycopg = pytest.importorskip("psycopg")

# That module's fixtures, for the tests here to ask for by name.
tcp_env = pg_writer_tests.tcp_env
pg_writers = pg_writer_tests.pg_writers
zmq_context = pg_writer_tests.zmq_context


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process for an instance to register as its own; killed at teardown if still running."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


class Instance:
    """A made-up GUI instance of process `pid` on host id `host_id`: a hello, then seq 2, 3, ..."""

    def __init__(self, pid: int, create_time: float, host_id: str | None) -> None:
        self.instance_id = str(uuid.uuid4())
        self.token = uuid.uuid4().hex
        self.pid, self.create_time, self.host_id = pid, create_time, host_id

    def message(self, seq: int, *ops: tuple[str, dict[str, Any]]) -> bytes:
        """Message `seq` carrying `ops`, after a hello when seq is 1."""
        operations = [list(op) for op in ops]
        if seq == 1:
            hello: dict[str, Any] = {
                "pid": self.pid,
                "process_create_time": self.create_time,
                "host": leases.host_name(),
                "token": self.token,
                "at_us": AT_US,
            }
            if self.host_id is not None:
                hello["host_id"] = self.host_id
            operations.insert(0, ["hello", hello])
        return msgpack.packb([2, self.instance_id, seq, self.token, operations])  # type: ignore[no-any-return]

    def heartbeat(self) -> bytes:
        """An instance heartbeat, sent now."""
        return codec.encode_instance_heartbeat(self.instance_id, self.token, leases.wall_clock_us())


def instance_row(url: str, instance_id: str) -> dict[str, Any] | None:
    rows = query(
        url,
        "SELECT state, host_id, boot_id, last_heard_at, clock_skew_us, last_seq FROM instances WHERE id = %s",
        (instance_id,),
    )
    if not rows:
        return None
    state, host_id, boot_id, heard, skew, last_seq = rows[0]
    return {
        "state": state,
        "host_id": host_id,
        "boot_id": boot_id,
        "last_heard_at": heard,
        "clock_skew_us": skew,
        "last_seq": last_seq,
    }


def running_workflow(instance: Instance, push: zmq.Socket[Any], url: str) -> tuple[str, str]:
    """Register `instance` with a running workflow and a running task; wait until committed."""
    wid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    push.send(
        instance.message(
            1,
            create_workflow(wid),
            workflow_status(wid, "running", AT_US + 1),
            create_task(tid, wid),
            ("update_task_status", status_fields(tid, "running", AT_US + 2)),
        )
    )
    wait_until(lambda: (instance_row(url, instance.instance_id) or {}).get("last_seq") == 1, 30, "the hello")
    return wid, tid


def abandoned(url: str, wid: str, tid: str) -> bool:
    rows = query(
        url,
        "SELECT w.status, w.success, w.error_message, t.status, w.completed_at >= w.started_at"
        " FROM workflow_executions w JOIN task_executions t ON t.workflow_id = w.id WHERE w.id = %s"
        " AND t.id = %s",
        (wid, tid),
    )
    return bool(rows) and rows[0][0] == "failed" and rows[0][3] == "failed"


def test_the_lease_and_a_hello_record_host_ids_and_a_dead_local_process_is_abandoned(
    postgres_url, pg_writers, zmq_context, sleeper
):
    writer = pg_writers(postgres_url)
    row = wait_serving(postgres_url, writer)
    assert query(postgres_url, "SELECT host_id FROM writer_lease WHERE id = 1") == [(leases.host_id(),)]
    identity = leases.identity_of(sleeper.pid)
    local = Instance(identity.pid, identity.create_time, leases.host_id())
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    wid, tid = running_workflow(local, push, postgres_url)
    registered = instance_row(postgres_url, local.instance_id)
    assert registered is not None
    assert registered["host_id"] == leases.host_id()
    assert registered["boot_id"] == leases.boot_id()  # of the writer's host: its pid is checked here
    assert registered["state"] == "live"

    sleeper.kill()
    sleeper.wait()
    wait_until(lambda: abandoned(postgres_url, wid, tid), 30, "the dead instance's work to be abandoned")
    assert (instance_row(postgres_url, local.instance_id) or {})["state"] == "dead"
    error, success, ordered = query(
        postgres_url,
        "SELECT error_message, success, completed_at >= started_at FROM workflow_executions WHERE id = %s",
        (wid,),
    )[0]
    assert error.startswith(f"abandoned: instance {local.instance_id} (pid {identity.pid}) died")
    assert success is False and ordered is True
    events = query(
        postgres_url,
        "SELECT event_type, data->>'instance_id' FROM audit_events WHERE workflow_id = %s",
        (wid,),
    )
    assert events == [("workflow_abandoned", local.instance_id)]


def test_a_remote_instance_lives_by_its_heartbeats_and_is_abandoned_when_silent(
    postgres_url, pg_writers, zmq_context
):
    writer = pg_writers(postgres_url, "--remote-silence", "3")
    row = wait_serving(postgres_url, writer)
    # A pid that is no process of this machine's: only heartbeats can keep it alive here.
    remote = Instance(4_000_000, 1.0, "another-host-" + uuid.uuid4().hex)
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    wid, tid = running_workflow(remote, push, postgres_url)
    registered = instance_row(postgres_url, remote.instance_id)
    assert registered is not None and registered["host_id"] == remote.host_id
    assert registered["boot_id"] is None  # not of the writer's host: its pid means nothing here

    # Heartbeats for longer than the silence: it stays live, and the writer notes them.
    beats = {"n": 0}

    def beat_and_count() -> bool:
        push.send(remote.heartbeat())
        beats["n"] += 1
        heard = instance_row(postgres_url, remote.instance_id) or {}
        return beats["n"] >= 12 and heard.get("clock_skew_us") is not None

    wait_until(beat_and_count, 30, "heartbeats to be heard")
    assert (instance_row(postgres_url, remote.instance_id) or {})["state"] == "live"
    assert not abandoned(postgres_url, wid, tid)
    with Reader(postgres_url) as reader:  # live by the writer's word, not by a pid of this host
        assert remote.instance_id in {i.id for i in reader.get_active_instances()}

    # Silent now: marked dead, its work abandoned with the reason.
    wait_until(lambda: abandoned(postgres_url, wid, tid), 30, "the silent instance's work to be abandoned")
    assert (instance_row(postgres_url, remote.instance_id) or {})["state"] == "dead"
    (error,) = query(postgres_url, "SELECT error_message FROM workflow_executions WHERE id = %s", (wid,))[0]
    assert "was not heard from for" in error
    with Reader(postgres_url) as reader:
        assert remote.instance_id not in {i.id for i in reader.get_active_instances()}

    # Heard again: live again (what was abandoned stays failed).
    push.send(remote.heartbeat())
    wait_until(
        lambda: (instance_row(postgres_url, remote.instance_id) or {}).get("state") == "live",
        30,
        "the instance to be live again",
    )
    assert abandoned(postgres_url, wid, tid)


def test_old_ended_instance_rows_are_deleted_and_live_ones_kept(postgres_url, pg_writers):
    first = pg_writers(postgres_url)
    wait_serving(postgres_url, first)  # the schema
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    old, live = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO instances (id, pid, host, started_at, last_seen, ended_at, state)"
            " VALUES (%s, 1, 'h', '2020-01-01T00:00:00+00:00', '2020-01-01T00:00:00+00:00',"
            " '2020-01-01T00:00:00+00:00', 'ended'),"
            " (%s, 1, 'h', '2020-01-01T00:00:00+00:00', '2020-01-01T00:00:00+00:00', NULL, 'live')",
            (old, live),
        )
    second = pg_writers(postgres_url, "--instances-kept-days", "1")
    wait_serving(postgres_url, second)
    wait_until(
        lambda: not query(postgres_url, "SELECT 1 FROM instances WHERE id = %s", (old,)),
        30,
        "the old ended instance row to be deleted",
    )
    assert query(postgres_url, "SELECT COUNT(*) FROM instances WHERE id = %s", (live,)) == [(1,)]
