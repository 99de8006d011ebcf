"""The Client on PostgreSQL finds its writer in the lease row and reaches it over TCP with CURVE.

No writer runs on PostgreSQL yet (branch pgwriter builds it), so the test stands in for one:
it fills the lease row itself and listens with a plain ZeroMQ PULL and PUB, CURVE servers with
the test's own key pair and an allow-list holding the client's key. Everything else is real:
a PostgreSQL server, the Client's sending thread, its read-only connections, real sockets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth.thread
from conftest import wait_until

from see_persistence import CallerError, Client, Status, leases
from see_persistence.keys import KeyStore
from see_persistence.protocol import codec, schema, schema_postgresql
from see_persistence.protocol.timestamps import format_us

psycopg = pytest.importorskip("psycopg")

RECEIVE_TIMEOUT_S = 30.0


def create_schema(url: str) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        for statement in schema_postgresql.upgrade_statements(0):
            conn.execute(statement)
        conn.execute(schema_postgresql.version_row_statement(), (schema.SCHEMA_VERSION, format_us(0)))


class AllowOnly:
    """A ZAP credentials provider that lets in one CURVE public key (Z85)."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.key


class StandInWriter:
    """PULL and PUB on free loopback ports, CURVE servers that allow one client key."""

    def __init__(self, allowed_client_key: str) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self.auth = zmq.auth.thread.ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=AllowOnly(allowed_client_key))
        public, secret = zmq.curve_keypair()
        self.public_key = public.decode()
        self.pull = self.context.socket(zmq.PULL)
        self.pub = self.context.socket(zmq.PUB)
        for sock in (self.pull, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.pull_endpoint = f"tcp://127.0.0.1:{self.pull.bind_to_random_port('tcp://127.0.0.1')}"
        self.pub_endpoint = f"tcp://127.0.0.1:{self.pub.bind_to_random_port('tcp://127.0.0.1')}"

    def receive(self, until: Any, timeout_s: float = RECEIVE_TIMEOUT_S) -> list[codec.Envelope]:
        """Messages received until `until(messages)` holds; fails the test after `timeout_s`."""
        received: list[codec.Envelope] = []
        deadline = time.monotonic() + timeout_s
        while not until(received):
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            assert remaining_ms > 0, f"the client's messages did not all arrive; got {received}"
            if self.pull.poll(min(remaining_ms, 200)):
                received.append(codec.decode_message(self.pull.recv()))
        return received

    def close(self) -> None:
        self.pull.close(linger=0)
        self.pub.close(linger=0)
        self.auth.stop()
        self.context.term()


def record_lease(url: str, writer: StandInWriter, epoch: int = 1) -> None:
    """The lease row as a writer on this machine records it once it listens on TCP."""
    me = leases.current_process()
    now = format_us(leases.wall_clock_us())
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO writer_lease (id, pid, process_create_time, host, endpoint, epoch, acquired_at,"
            " heartbeat_at, boot_id, heartbeat_boot_ns, endpoints, public_key)"
            " VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                me.pid,
                me.create_time,
                me.host,
                writer.pull_endpoint,
                epoch,
                now,
                now,
                me.boot_id,
                leases.boot_time_ns(),
                json.dumps([[writer.pull_endpoint, writer.pub_endpoint]]),
                writer.public_key,
            ),
        )


def operations(messages: list[codec.Envelope]) -> list[str]:
    return [name for message in messages for name, _payload in message.operations]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def writer(keys_dir: Path) -> Iterator[StandInWriter]:
    stand_in = StandInWriter(KeyStore(keys_dir).client_pair().public)
    try:
        yield stand_in
    finally:
        stand_in.close()


def test_a_client_queues_until_the_lease_names_a_writer_then_delivers_in_order_over_curve(
    postgres_url: str, writer: StandInWriter, keys_dir: Path
) -> None:
    create_schema(postgres_url)
    with Client(postgres_url, keys_dir=keys_dir) as client:
        # No writer has recorded itself: what the GUI records waits in the outbox.
        wid = client.create_workflow("nightly", metadata={"branch": "main"})
        client.update_workflow_status(wid, Status.RUNNING)
        assert client.stats.sent == 0 and client.stats.buffered == 2
        record_lease(postgres_url, writer)
        tid = client.create_task(wid, "compile", execution_order=1)
        client.log_audit_event("note", "after the lease", workflow_id=wid)

        messages = writer.receive(lambda got: len(operations(got)) >= 5)
        assert operations(messages) == [
            "hello",
            "create_workflow",
            "update_workflow_status",
            "create_task",
            "audit_event",
        ]
        assert {m.instance_id for m in messages} == {client.instance_id}
        assert [m.seq for m in messages] == sorted(m.seq for m in messages)
        payloads = [payload for m in messages for _name, payload in m.operations]
        assert payloads[1]["id"] == wid and payloads[3]["id"] == tid
        # The sender thread counts a message as sent after its send returns: the stand-in can
        # hold it a moment before that.
        wait_until(lambda: client.stats.sent == 4, 10.0, "the client to count its 4 operations sent")
        client.close(timeout=0)  # nothing will confirm them: no stand-in commits here


def test_flush_is_confirmed_by_the_notice_and_then_by_the_instance_row(
    postgres_url: str, writer: StandInWriter, keys_dir: Path
) -> None:
    create_schema(postgres_url)
    record_lease(postgres_url, writer)
    with Client(postgres_url, keys_dir=keys_dir) as client:
        client.create_workflow("deploy")
        messages = writer.receive(lambda got: "create_workflow" in operations(got))
        last_seq = max(m.seq for m in messages)
        # What the writer does once it commits: the instance row, then the notice.
        with psycopg.connect(postgres_url) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO instances (id, state, last_seq, rejected) VALUES (%s, 'live', %s, 0)",
                (client.instance_id, last_seq),
            )
        stop = threading.Event()

        def announce() -> None:  # PUB/SUB drops what is sent before the client subscribed
            while not stop.is_set():
                writer.pub.send_multipart(codec.encode_commit_notice(client.instance_id, 1, last_seq))
                stop.wait(0.05)

        announcer = threading.Thread(target=announce)
        announcer.start()
        try:
            assert client.flush(timeout=RECEIVE_TIMEOUT_S)
        finally:
            stop.set()
            announcer.join()
        assert client.stats.confirmed == 1 and client.stats.writer_epoch == 1


def test_spawn_writer_is_refused_for_a_url(postgres_url: str) -> None:
    with pytest.raises(CallerError, match="supervisor"):
        Client(postgres_url, spawn_writer=True)


def test_the_client_reads_its_rejections_from_the_server(
    postgres_url: str, writer: StandInWriter, keys_dir: Path
) -> None:
    create_schema(postgres_url)
    with Client(postgres_url, keys_dir=keys_dir) as client:
        with psycopg.connect(postgres_url) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO dead_letters (received_at, instance_id, seq, reason, raw)"
                " VALUES (%s, %s, 3, %s, %s)",
                (format_us(leases.wall_clock_us()), client.instance_id, "unknown status", b"\x92\xa1x\x80"),
            )
        [rejection] = client.rejections()
        assert rejection.reason == "unknown status" and rejection.operation == "x"
        assert "postgresql://" in str(client.database)
        client.close(timeout=0)


def test_configure_takes_a_url_for_both_handles(postgres_url: str) -> None:
    from see_persistence import close_defaults, configure, get_reader

    create_schema(postgres_url)
    configure(postgres_url)
    try:
        reader = get_reader()
        assert reader.get_writer_status() is None
        assert getattr(reader.database, "url", None) == postgres_url
    finally:
        close_defaults(timeout=0)
        configure(None)
