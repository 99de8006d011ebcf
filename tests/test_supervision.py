"""Running under a supervisor: systemd's notify protocol, SIGHUP, documented exit codes."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from conftest import Database, wait_until

UNIT = Path(__file__).parent.parent / "tools" / "supervisors" / "see-persistence-writer.service"


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return messages


def test_the_writer_speaks_systemd_notify_as_the_unit_runs_it(db, writers, notify_socket):
    path, sock = notify_socket
    assert "Type=notify" in UNIT.read_text()
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    writer = writers(db, env=env)
    seen: list[str] = []
    wait_until(
        lambda: seen.extend(_received(sock)) or any(m.startswith("READY=1") for m in seen), 20, "READY=1"
    )
    writer.wait_holding_lease()  # READY came after the lease was taken and the socket bound
    wait_until(lambda: seen.extend(_received(sock)) or seen.count("WATCHDOG=1") >= 2, 10, "watchdog pings")
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    seen.extend(_received(sock))
    assert "STOPPING=1" in seen
    ready = next(m for m in seen if m.startswith("READY=1"))
    assert "STATUS=serving" in ready


# The PostgreSQL writer handles its signals itself (writer/pg_service.py); it speaks no
# systemd notify yet, so the test above stays SQLite's.
@pytest.mark.over("sqlite-ipc", "postgresql-tcp")
def test_sighup_does_not_stop_the_writer(database: Database, writers, clients):
    db = database.db
    writer = writers(db)
    writer.wait_holding_lease()
    writer.signal(signal.SIGHUP)
    wait_until(lambda: "received SIGHUP" in writer.log(), 10, "the SIGHUP log line")
    assert clients(db, "--workflows", "2").finish()["flushed"] is True
    assert writer.process.poll() is None
    writer.signal(signal.SIGINT)
    assert writer.wait_exit() == 0
