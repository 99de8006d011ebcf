"""GUI instances on another host: kept alive by heartbeats over TCP + CURVE, found dead when
they fall silent, and their clock's skew shown by `status`. Real writer and client processes.

The "other host" is this machine with the test hook $SEE_PERSISTENCE_TEST_HOST_ID set in the
client's environment: it claims another host id, so the writer may not check its pid and must
go by what it hears. Each writer runs with a short `--remote-silence`, so the tests need not
wait the default's 15 s.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from cli_support import cli
from conftest import ClientProcess, wait_until
from test_tcp_transport import _create, _curve, _endpoints, _hello_message

from see_persistence import Reader, Status, leases
from see_persistence.keys import KeyStore
from see_persistence.protocol import codec

LISTEN = ("--listen", "tcp://127.0.0.1:0")
# A far client heartbeats every 2 s (leases.INSTANCE_HEARTBEAT_INTERVAL_S), its sender waking up
# to 0.25 s late: 3 s of silence left under a second for a loaded machine before an idle live
# instance was marked dead.
SILENCE_S = 5.0
TAKEOVER_SILENCE_S = 9.0  # see the takeover test
OTHER_HOST_ID = "far-away-host/pid:[4026531836]"


@pytest.fixture
def tcp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a process that reaches the writer over TCP, in this test and its children."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    monkeypatch.delenv(leases.HOST_ID_ENV, raising=False)
    monkeypatch.delenv(leases.WALL_CLOCK_OFFSET_ENV, raising=False)
    return dict(os.environ)


@pytest.fixture
def far_env(tcp_env: dict[str, str]) -> dict[str, str]:
    """A client's environment that claims another host."""
    return {**tcp_env, leases.HOST_ID_ENV: OTHER_HOST_ID}


def _serving(writers: Any, db: Path, env: dict[str, str]) -> Any:
    writer = writers(db, *LISTEN, "--remote-silence", str(SILENCE_S), env=env)
    writer.wait_holding_lease()
    wait_until(lambda: Reader(db).get_writer_status().endpoints, 20, "the writer to record its endpoints")
    return writer


def _left_running(client: ClientProcess) -> dict[str, Any]:
    client.read_event()  # started
    left = client.read_event()
    assert left["flushed"], left
    return left


def _stats(client: ClientProcess) -> dict[str, Any]:
    assert client.process.stdin is not None
    client.process.stdin.write("stats\n")
    client.process.stdin.flush()
    event = client.read_event()
    assert event["phase"] == "stats"
    return event["stats"]  # type: ignore[no-any-return]


def _heard_past(reader: Reader, instance_id: str, since: Any, seconds: float) -> bool:
    instance = reader.get_instance(instance_id)
    return instance.last_heard_at is not None and instance.last_heard_at - since > timedelta(seconds=seconds)


def _abandoned(reader: Reader, workflow_id: str) -> Any:
    run = reader.get_workflow(workflow_id)
    return run if run.status == Status.FAILED else None


def test_an_idle_instance_of_another_host_lives_by_heartbeats_and_is_abandoned_once_killed(
    db, writers, clients, tcp_env, far_env
):
    _serving(writers, db, tcp_env)
    far = clients(db, "--label", "far", "--workflows", "1", "--leave-running", env=far_env)
    near = clients(db, "--label", "near", "--workflows", "1", "--leave-running", env=tcp_env)
    far_left, near_left = _left_running(far), _left_running(near)
    reader = Reader(db)
    far_row = reader.get_instance(far_left["instance_id"])
    assert far_row.host_id == OTHER_HOST_ID and far_row.boot_id is None  # no pid check for it
    near_row = reader.get_instance(near_left["instance_id"])
    assert near_row.host_id == leases.host_id() and near_row.boot_id == leases.boot_id()

    # Idle for twice the silence, and still live: its heartbeats reached the writer meanwhile.
    wait_until(
        lambda: _heard_past(reader, far_left["instance_id"], far_row.last_heard_at, 2 * SILENCE_S),
        30,
        "the writer to hear the idle far instance for twice the silence",
    )
    assert reader.get_instance(far_left["instance_id"]).state == "live"
    assert reader.get_workflow(far_left["running_workflow"]).status == Status.RUNNING
    assert far_left["instance_id"] in {i.id for i in reader.get_active_instances()}
    assert _stats(far)["heartbeats"] >= 2
    assert _stats(near)["heartbeats"] == 0  # on the writer's host: its pid says it lives

    far.kill()
    run = wait_until(
        lambda: _abandoned(reader, far_left["running_workflow"]), 30, "the far workflow abandoned"
    )
    assert run.error_message.startswith("abandoned:") and "not heard from for" in run.error_message
    assert far_left["instance_id"] in run.error_message
    [task] = reader.get_tasks_for_workflow(run.id)
    assert task.status == Status.FAILED and task.error_message == run.error_message
    events = [e for e in reader.get_audit_trail(run.id) if e.event_type == "workflow_abandoned"]
    assert len(events) == 1
    assert reader.get_instance(far_left["instance_id"]).state == "dead"
    # The local instance, silent as long, is untouched: its pid runs.
    assert reader.get_instance(near_left["instance_id"]).state == "live"
    assert reader.get_workflow(near_left["running_workflow"]).status == Status.RUNNING
    assert Reader(db).count_rows()["dead_letters"] == 0


def test_an_instance_of_another_host_stopped_past_the_silence_is_dead_and_live_again_once_resumed(
    db, writers, clients, tcp_env, far_env
):
    _serving(writers, db, tcp_env)
    far = clients(db, "--label", "far", "--workflows", "0", "--leave-running", env=far_env)
    left = _left_running(far)
    reader = Reader(db)
    os.kill(far.pid, signal.SIGSTOP)
    try:
        run = wait_until(
            lambda: _abandoned(reader, left["running_workflow"]), 30, "the stopped instance's workflow"
        )
        assert "not heard from for" in run.error_message
        assert reader.get_instance(left["instance_id"]).state == "dead"
    finally:
        os.kill(far.pid, signal.SIGCONT)
    wait_until(
        lambda: reader.get_instance(left["instance_id"]).state == "live",
        30,
        "the resumed instance to be heard",
    )
    assert reader.get_instance(left["instance_id"]).ended_at is None
    assert reader.get_workflow(left["running_workflow"]).status == Status.FAILED  # abandoned stays so
    assert Reader(db).count_rows()["dead_letters"] == 0


def test_a_host_whose_clock_is_an_hour_behind_shows_in_status(db, writers, clients, tcp_env, far_env):
    _serving(writers, db, tcp_env)
    skewed_env = {**far_env, leases.WALL_CLOCK_OFFSET_ENV: "-3600"}
    far = clients(db, "--label", "far", "--workflows", "0", "--leave-running", env=skewed_env)
    near = clients(db, "--label", "near", "--workflows", "0", "--leave-running", env=tcp_env)
    left = _left_running(far)
    _left_running(near)
    reader = Reader(db)
    wait_until(
        lambda: reader.get_instance(left["instance_id"]).clock_skew_us is not None, 30, "a heartbeat measured"
    )
    skew_s = reader.get_instance(left["instance_id"]).clock_skew_us / 1e6
    assert 3590 < skew_s < 3610  # the writer's clock minus the far host's: an hour, give or take delays

    report = json.loads(cli("status", "--db", db, "--json", env=tcp_env).stdout)
    [shown] = report["clock_skews"]  # only the far host: the near one shares the writer's clock
    assert shown["host_id"] == OTHER_HOST_ID and shown["instance_id"] == left["instance_id"]
    assert -3610 < shown["clock_offset_s"] < -3590
    text = cli("status", "--db", db, env=tcp_env).stdout
    assert f"({OTHER_HOST_ID}) runs 36" in text and "s behind the writer's clock" in text
    [far_line] = [line for line in text.splitlines() if line.split()[:2] == ["live", left["instance_id"]]]
    assert f"on {leases.host_name()} ({OTHER_HOST_ID}), heard 20" in far_line


def test_bad_and_forged_heartbeats_over_tcp_are_dead_letters_and_an_unknown_instances_is_ignored(
    db, writers, clients, tcp_env, far_env
):
    _serving(writers, db, tcp_env)
    far = clients(db, "--label", "far", "--workflows", "0", "--leave-running", env=far_env)
    left = _left_running(far)
    target = _endpoints(db)
    mine = KeyStore().client_pair()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    _curve(push, target.server_key, mine.public, mine.secret)
    push.connect(target.pull)
    try:
        push.send(msgpack.packb([codec.HEARTBEAT_KIND, left["instance_id"], "t" * 32]))  # 3 items
        push.send(codec.encode_instance_heartbeat(left["instance_id"], "f" * 32, 1))  # not its token
        push.send(codec.encode_instance_heartbeat("nobody-knows-me", "n" * 32, 1))
        push.send(_hello_message("marker-hb", _create("w-marker-hb")))
        reader = Reader(db)
        wait_until(lambda: reader.get_workflow("w-marker-hb"), 20, "the marker behind the heartbeats")
    finally:
        push.close()
        context.term()
    reasons = [r[0] for r in reader.query("SELECT reason FROM dead_letters ORDER BY id")]
    assert len(reasons) == 2, reasons
    assert "a heartbeat must have 4 items, got 3" in reasons[0]
    assert "another token than the one it registered with" in reasons[1]
    assert reader.get_instance("nobody-knows-me") is None
    assert reader.get_instance(left["instance_id"]).state == "live"


def test_an_idle_instance_of_another_host_follows_a_standby_that_took_over_on_other_ports(
    db, writers, clients, tcp_env, far_env
):
    # A longer silence here: the client must first miss the old writer's notices, then read
    # the lease, then connect to the new ports (about 2 s), on a machine that may be busy.
    silence = str(TAKEOVER_SILENCE_S)
    first = writers(db, *LISTEN, "--remote-silence", silence, env=tcp_env)
    first.wait_holding_lease()
    wait_until(lambda: Reader(db).get_writer_status().endpoints, 20, "the writer to record its endpoints")
    standby = writers(db, *LISTEN, "--standby", "--remote-silence", silence, env=tcp_env)
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
    far = clients(db, "--label", "far", "--workflows", "0", "--leave-running", env=far_env)
    left = _left_running(far)
    reader = Reader(db)
    old_epoch = reader.get_writer_status().epoch
    first.signal(signal.SIGKILL)
    first.wait_exit()
    standby.wait_holding_lease()
    wait_until(lambda: reader.get_writer_status().epoch > old_epoch, 20, "the standby's lease")
    taken_over = reader.get_writer_status().since
    # Idle all along, it found the new writer's ports in the lease and keeps reaching it.
    wait_until(
        lambda: _heard_past(reader, left["instance_id"], taken_over, 2 * TAKEOVER_SILENCE_S),
        40,
        "the new writer to hear the idle far instance for twice the silence",
    )
    assert reader.get_instance(left["instance_id"]).state == "live"
    assert reader.get_workflow(left["running_workflow"]).status == Status.RUNNING
