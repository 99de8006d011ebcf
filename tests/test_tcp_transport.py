"""TCP with CURVE: real writer and client processes on real loopback sockets, real key files.

Every writer here listens on `tcp://127.0.0.1:0` (free ports, recorded in the lease row), and
the clients find it there ($SEE_PERSISTENCE_TRANSPORT=tcp), each with the key directory of the
test: the same user on the same machine, so the client key is allowed when it is created.
The end-to-end tests of test_pipeline.py and others run over TCP too (the `transport` and
`database` fixtures of conftest.py); what is here is TCP's own: the lease's endpoints and key,
other ports after a takeover, a spawned writer's keys, refused peers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import msgpack
import pytest
import zmq
from cli_support import cli
from conftest import wait_until

from see_persistence import Client, Reader, Status, leases
from see_persistence.client.transport import tcp_endpoints_from_lease
from see_persistence.connection import TcpEndpoints
from see_persistence.keys import KeyStore
from see_persistence.protocol import codec

LISTEN = ("--listen", "tcp://127.0.0.1:0")
HANDSHAKE_REFUSAL = re.compile(
    r"refused a TCP connection from a peer of tcp://127\.0\.0\.1:\d+: "
    r"(not a CURVE handshake|handshake failed)"
)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """A key directory of this test's own (created on first use, as in real life)."""
    return tmp_path / "keys"


@pytest.fixture
def tcp_env(keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a process that reaches the writer over TCP, in this test and its children."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(keys_dir))
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    return dict(os.environ)


def _listening(db: Path) -> None:
    """Wait until the writer holding the lease has recorded where it listens (just after it took it)."""
    wait_until(lambda: Reader(db).get_writer_status().endpoints, 20, "the writer to record its endpoints")


def _endpoints(db: Path) -> TcpEndpoints:
    reader = Reader(db)
    try:
        found = tcp_endpoints_from_lease(reader)
    finally:
        reader.close()
    assert found is not None, "the lease row names no TCP endpoint"
    return found


def _curve(sock: zmq.Socket, server_key: str, public: str, secret: str) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())


def _hello_message(instance_id: str, *ops: list[object]) -> bytes:
    me = leases.current_process()
    token = (instance_id * 32)[:32]
    hello = [
        "hello",
        {"pid": me.pid, "process_create_time": me.create_time, "host": me.host, "token": token, "at_us": 1},
    ]
    return msgpack.packb([2, instance_id, 1, token, [hello, *ops]])


def _create(wid: str) -> list[object]:
    return [
        "create_workflow",
        {"id": wid, "workflow_name": wid, "metadata": "{}", "at_us": 1_700_000_000_000_000},
    ]


# -- the pipeline over TCP ------------------------------------------------------------------------


def test_clients_find_the_writer_in_the_lease_and_commit_exact_counts_in_order(db, writers, clients, tcp_env):
    writer = writers(db, *LISTEN, env=tcp_env)
    writer.wait_holding_lease()
    _listening(db)
    status = Reader(db).get_writer_status()
    assert status.public_key == KeyStore().writer_pair().public
    assert status.endpoints and all(pull.startswith("tcp://127.0.0.1:") for pull, _ in status.endpoints)
    assert status.endpoint == status.endpoints[0][0]
    procs = [
        clients(db, "--label", f"c{n}", "--workflows", "10", "--tasks", "3", env=tcp_env) for n in range(3)
    ]
    quick = clients(db, "--workflows", "200", "--quick-succession", env=tcp_env)
    reports = [p.finish() for p in procs]
    assert all(r["flushed"] for r in reports)  # flush() works over TCP: the file was read right after
    quick_report = quick.finish()
    assert quick_report["flushed"]
    counts = Reader(db).count_rows()
    assert (counts["workflow_executions"], counts["task_executions"], counts["dead_letters"]) == (230, 90, 0)
    reader = Reader(db)
    for report in reports:
        tasks = reader.get_tasks_for_workflow(report["workflow_ids"][0])
        assert [t.execution_order for t in tasks] == [1, 2, 3]
        assert tasks[0].logs == [f"{tasks[0].task_name}-line-0", f"{tasks[0].task_name}-line-1"]
    runs = reader.get_workflows_for_instance(quick_report["instance_id"], limit=None)
    assert len(runs) == 200 and all(
        r.status == Status.COMPLETED and r.started_at <= r.completed_at for r in runs
    )


def test_a_writer_spawned_by_a_client_with_its_own_key_directory_allows_that_clients_key(
    db, tmp_path, monkeypatch
):
    # The default key directory (under HOME) holds nothing of this client's: a spawned writer
    # that looked there would refuse it, and flush() would time out.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEE_PERSISTENCE_KEYS_DIR", raising=False)
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    own_keys = tmp_path / "app-keys"
    with Client(db, spawn_writer=True, keys_dir=own_keys) as client:
        wid = client.create_workflow("spawned over tcp")
        assert client.flush(timeout=30)
    status = Reader(db).get_writer_status()
    assert status is not None and status.alive
    try:
        assert Reader(db).get_workflow(wid) is not None
        assert (own_keys / "writer.key_secret").exists()  # the writer's pair was made there too
    finally:
        os.kill(status.pid, signal.SIGTERM)
        wait_until(lambda: not Reader(db).get_writer_status().alive, 20, "the spawned writer to stop")


def test_a_writer_killed_mid_stream_is_replaced_on_other_ports_and_nothing_is_lost_or_doubled(
    db, writers, clients, tcp_env
):
    first = writers(db, *LISTEN, env=tcp_env)
    first.wait_holding_lease()
    _listening(db)
    standby = writers(db, *LISTEN, "--standby", env=tcp_env)
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
    old = _endpoints(db)
    client = clients(db, "--workflows", "300", "--tasks", "2", "--logs", "1", "--events", "1", env=tcp_env)
    client.read_event()
    wait_until(lambda: Reader(db).count_rows()["workflow_executions"] > 20, 20, "the first commits")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    standby.wait_holding_lease()
    _listening(db)
    assert _endpoints(db).pull != old.pull  # a free port of its own: the client had to read the lease again
    report = client.finish(timeout=90)
    assert report["flushed"] is True
    counts = Reader(db).count_rows()
    assert (counts["workflow_executions"], counts["task_executions"], counts["audit_events"]) == (
        300,
        600,
        300,
    )
    assert counts["dead_letters"] == 0
    reader = Reader(db)
    for wid in report["workflow_ids"][::29]:
        assert [len(t.logs) for t in reader.get_tasks_for_workflow(wid)] == [1, 1]


def test_without_posix_calls_or_ipc_the_writer_and_clients_choose_tcp_and_survive_a_takeover(
    db, writers, clients, keys_dir, monkeypatch
):
    # tests/non_posix/sitecustomize.py takes from each process what Windows lacks (uid, fork,
    # clock_gettime, SIGHUP/SIGKILL, fcntl) and gives it a libzmq without ipc; nobody asks for
    # TCP: each process must choose it and find the writer by itself.
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(keys_dir))
    monkeypatch.delenv("SEE_PERSISTENCE_TRANSPORT", raising=False)
    shim = str(Path(__file__).parent / "non_posix")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")])))
    env = dict(os.environ)
    first = writers(db, env=env)
    first.wait_holding_lease()
    _listening(db)
    assert all(pull.startswith("tcp://127.0.0.1:") for pull, _ in Reader(db).get_writer_status().endpoints)
    standby = writers(db, "--standby", env=env)
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
    client = clients(db, "--workflows", "200", "--tasks", "1", env=env)
    client.read_event()
    wait_until(lambda: Reader(db).count_rows()["workflow_executions"] > 20, 20, "the first commits")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    standby.wait_holding_lease()
    report = client.finish(timeout=90)
    assert report["flushed"] is True
    counts = Reader(db).count_rows()
    assert (counts["workflow_executions"], counts["task_executions"], counts["dead_letters"]) == (200, 200, 0)
    assert {w.id for w in Reader(db).list_workflows(limit=1000)} == set(report["workflow_ids"])
    shown = cli("status", "--db", str(db), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "tcp://127.0.0.1:" in shown.stdout


def test_bad_input_over_tcp_becomes_dead_letters_and_the_good_messages_commit(db, writers, tcp_env):
    writers(db, *LISTEN, env=tcp_env).wait_holding_lease()
    _listening(db)
    target = _endpoints(db)
    mine = KeyStore().client_pair()
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    _curve(push, target.server_key, mine.public, mine.secret)
    push.connect(target.pull)
    push.send(b"\xc1\xc1\xc1")
    push.send(msgpack.packb({"v": 1}))
    push.send(_hello_message("rogue-tcp", ["drop_tables", {}]))
    push.send(_hello_message("marker-tcp", _create("w-marker")))
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow("w-marker"), 20, "the marker behind the bad messages")
    reasons = [r[0] for r in reader.query("SELECT reason FROM dead_letters")]
    assert any("not msgpack" in r for r in reasons)
    assert any("must be a msgpack array" in r for r in reasons)
    assert any("unknown operation 'drop_tables'" in r for r in reasons)
    push.close()
    context.term()


def test_commit_notices_reach_an_allowed_subscriber_over_curve(db, writers, tcp_env):
    writers(db, *LISTEN, env=tcp_env).wait_holding_lease()
    _listening(db)
    target = _endpoints(db)
    mine = KeyStore().client_pair()
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    _curve(sub, target.server_key, mine.public, mine.secret)
    sub.setsockopt(zmq.SUBSCRIBE, codec.NOTICE_HEARTBEAT)
    sub.connect(target.pub)
    assert sub.poll(20_000), "no heartbeat notice over TCP in 20 s"
    notice = codec.decode_notice(sub.recv_multipart())
    assert notice.epoch == Reader(db).get_writer_status().epoch
    sub.close()
    context.term()


# -- refused peers --------------------------------------------------------------------------------


def test_unknown_key_plaintext_and_garbage_peers_are_refused_and_nothing_of_theirs_is_stored(
    db, writers, clients, tcp_env
):
    writer = writers(db, *LISTEN, env=tcp_env)
    writer.wait_holding_lease()
    _listening(db)
    target = _endpoints(db)
    context = zmq.Context()
    stranger_public, stranger_secret = (k.decode() for k in zmq.curve_keypair())
    unknown = context.socket(zmq.PUSH)
    unknown.setsockopt(zmq.LINGER, 0)
    _curve(unknown, target.server_key, stranger_public, stranger_secret)
    unknown.connect(target.pull)
    plaintext = context.socket(zmq.PUSH)
    plaintext.setsockopt(zmq.LINGER, 0)
    plaintext.connect(target.pull)
    for sock, name in ((unknown, "stranger"), (plaintext, "plain")):
        for n in range(3):  # queued in the peer if it takes them; none may ever reach the writer
            try:
                sock.send(_hello_message(f"{name}-{n}", _create(f"w-{name}-{n}")), zmq.NOBLOCK)
            except zmq.Again:
                pass  # no handshake completed: nowhere to queue it
    port = int(target.pull.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\xff" + os.urandom(200) + _hello_message("garbage", _create("w-garbage")))
    wait_until(lambda: "client key not on the allow-list" in writer.log(), 20, "the unknown key's refusal")
    # Which side of a plaintext/CURVE mismatch notices first is a race inside libzmq: when the
    # plaintext peer hangs up first, the writer's libzmq reports a handshake cut short instead.
    wait_until(lambda: HANDSHAKE_REFUSAL.search(writer.log()), 20, "the plaintext peer's refusal")
    assert writer.log().count("client key not on the allow-list") == 1  # once per address, not per try
    assert "refused a TCP connection from 127.0.0.1: client key not on the allow-list" in writer.log()
    report = clients(db, "--workflows", "2", env=tcp_env).finish()  # a good client is still served
    assert report["flushed"] is True
    reader = Reader(db)
    assert {w.id for w in reader.list_workflows()} == set(report["workflow_ids"])
    assert reader.count_rows()["dead_letters"] == 0
    assert [i.id for i in reader.get_instances()] == [report["instance_id"]]
    unknown.close()
    plaintext.close()
    context.term()


def test_a_revoked_key_is_refused_from_its_next_connection(db, writers, tcp_env, keys_dir):
    writer = writers(db, *LISTEN, env=tcp_env)
    writer.wait_holding_lease()
    store = KeyStore(keys_dir)
    store.revoke(store.client_pair().public)
    with Client(db) as client:
        client.create_workflow("after-revoke")
        assert client.flush(timeout=3.0) is False
    wait_until(lambda: "client key not on the allow-list" in writer.log(), 20, "the revoked key's refusal")
    assert Reader(db).count_rows()["workflow_executions"] == 0


# -- both transports on one writer, and a given connection string ---------------------------------


def test_one_writer_serves_ipc_and_tcp_clients_and_a_connection_string_reaches_it(
    db, writers, clients, keys_dir, monkeypatch
):
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(keys_dir))
    writer = writers(db, "--listen", "ipc", *LISTEN, env=dict(os.environ))
    writer.wait_holding_lease()
    _listening(db)
    status = Reader(db).get_writer_status()
    assert status.endpoint.startswith("ipc://")
    assert [pull.split(":")[0] for pull, _ in status.endpoints] == ["ipc", "tcp"]
    ipc_report = clients(db, "--label", "ipc", env=dict(os.environ)).finish()
    shown = cli("keys", "--db", db, "show", env=dict(os.environ)).stdout
    line = next(x for x in shown.splitlines() if x.startswith("connect (alive)"))
    with Client(db, endpoint=line.split()[-1]) as client:
        wid = client.create_workflow("by-connection-string")
        assert client.flush(timeout=20.0) is True
    reader = Reader(db)
    assert reader.get_workflow(wid) is not None
    assert len(reader.get_workflows_for_instance(ipc_report["instance_id"])) == 3
