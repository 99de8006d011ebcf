"""A flood of bad handshakes does not starve a good client (issue 16), with real sockets.

Threads of this process hammer the writer's TCP port with the three kinds of peer it must
refuse: bytes that are no ZMTP greeting, a plaintext ZeroMQ greeting (the NULL mechanism), and
CURVE clients with a key that is not on the allow-list (each of those costs the writer a
handshake and a ZAP request). Meanwhile a good client process records and flushes.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from conftest import wait_until
from zmq.utils.monitor import recv_monitor_message

from see_persistence import Reader
from see_persistence.client.transport import tcp_endpoints_from_lease
from see_persistence.connection import TcpEndpoints

THREADS_PER_KIND = 3
ATTEMPT_TIMEOUT_S = 5.0
REFUSAL_LINE = "refused a TCP connection from "
# A ZMTP 3.0 greeting offering the NULL mechanism: what a plaintext ZeroMQ peer sends first.
PLAINTEXT_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


@pytest.fixture
def tcp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """TCP for the processes this test starts, with a key directory of its own."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    return dict(os.environ)


class Flood:
    """Threads that open bad connections to one TCP port until stopped, counting each attempt."""

    def __init__(self, target: TcpEndpoints) -> None:
        self.target = target
        host, port = target.pull.removeprefix("tcp://").rsplit(":", 1)
        self.address = (host, int(port))
        self.attempts: Counter[str] = Counter()
        self.refused_by_zap = 0  # unknown-key attempts the writer answered with a refusal
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        kinds: list[tuple[str, Callable[[], None]]] = [
            ("garbage", self._garbage),
            ("plaintext", self._plaintext),
            ("unknown key", self._unknown_key),
        ]
        self._threads = [
            threading.Thread(target=self._loop, args=(kind, attempt), daemon=True)
            for kind, attempt in kinds
            for _ in range(THREADS_PER_KIND)
        ]
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()

    def start(self) -> None:
        """Start every thread."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop and join the threads; raise what one of them failed with."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ATTEMPT_TIMEOUT_S * 2)
        self._context.term()
        assert not any(t.is_alive() for t in self._threads), "a flood thread did not stop"
        if self._errors:
            raise self._errors[0]

    def _loop(self, kind: str, attempt: Callable[[], None]) -> None:
        try:
            while not self._stop.is_set():
                attempt()
                with self._lock:
                    self.attempts[kind] += 1
        except BaseException as exc:
            self._errors.append(exc)

    def _raw(self, payload: bytes) -> None:
        try:
            with socket.create_connection(self.address, timeout=ATTEMPT_TIMEOUT_S) as raw:
                raw.sendall(payload)
                raw.recv(64)  # the writer's greeting, or nothing once it hangs up
        except OSError:
            pass  # refused or reset: the writer hung up on us, as it should

    def _garbage(self) -> None:
        self._raw(os.urandom(300))

    def _plaintext(self) -> None:
        self._raw(PLAINTEXT_GREETING)

    def _unknown_key(self) -> None:
        public, secret = zmq.curve_keypair()
        push = self._context.socket(zmq.PUSH)
        try:
            push.setsockopt(zmq.LINGER, 0)
            push.setsockopt(zmq.CURVE_SERVERKEY, self.target.server_key.encode())
            push.setsockopt(zmq.CURVE_PUBLICKEY, public)
            push.setsockopt(zmq.CURVE_SECRETKEY, secret)
            monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            push.connect(self.target.pull)
            try:
                if monitor.poll(int(ATTEMPT_TIMEOUT_S * 1000)):
                    recv_monitor_message(monitor)
                    with self._lock:
                        self.refused_by_zap += 1
            finally:
                push.disable_monitor()
                monitor.close(linger=0)
        finally:
            push.close(linger=0)


def test_a_flood_of_bad_handshakes_does_not_starve_a_good_client_and_is_logged_once_per_peer(
    db, writers, clients, tcp_env
) -> None:
    writer = writers(db, "--listen", "tcp://127.0.0.1:0", env=tcp_env)
    writer.wait_holding_lease()
    reader = Reader(db)
    target = wait_until(lambda: tcp_endpoints_from_lease(reader), 20, "the writer's TCP endpoints")
    flood = Flood(target)
    flood.start()
    try:
        raw_kinds = ("garbage", "plaintext")
        wait_until(
            lambda: min(flood.attempts[k] for k in raw_kinds) >= 50 and flood.refused_by_zap >= 5,
            60,
            "the flood to be under way",
        )
        under_way = Counter(flood.attempts)
        good = clients(db, "--workflows", "50", "--tasks", "2", env=tcp_env)
        report = good.finish(timeout=90)
        during = flood.attempts - under_way
    finally:
        flood.stop()
    assert report["flushed"] is True, report["stats"]
    assert all(during[kind] > 0 for kind in ("garbage", "plaintext", "unknown key")), during
    assert {w.id for w in reader.list_workflows()} == set(report["workflow_ids"])
    counts = reader.count_rows()
    assert (counts["task_executions"], counts["dead_letters"]) == (100, 0)
    assert [i.id for i in reader.get_instances()] == [report["instance_id"]]
    # One line per (peer, reason), however many attempts: all from 127.0.0.1, so a handful.
    refusals = [line for line in writer.log().splitlines() if REFUSAL_LINE in line]
    said = [line.split(REFUSAL_LINE, 1)[1] for line in refusals]
    assert len(said) == len(set(said)), f"a refusal logged twice: {said}"
    assert said.count("127.0.0.1: client key not on the allow-list") == 1
    assert len(said) <= 5 < flood.refused_by_zap + sum(flood.attempts.values())
