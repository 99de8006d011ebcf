"""Exactly one writer: a writer stopped until it was presumed dead commits nothing when it resumes."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import hello_op, wait_until

from see_persistence import Reader, leases, locations
from see_persistence.protocol import codec
from see_persistence.protocol.errors import LeaseLostError
from see_persistence.writer import lease as lease_module
from see_persistence.writer.lease import LEASE_STALE_AFTER_S, LOCKED_OUT_KILL_AFTER_S, WriterLease
from see_persistence.writer.storage import open_write_connection, upgrade_schema


def test_a_stopped_writer_that_lost_its_lease_commits_nothing_and_exits(db, writers, clients):
    old = writers(db)
    old.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    waiting_client = clients(db, "--label", "early", "--workflows", "5", "--wait-before-record")
    waiting_client.read_event()
    context = zmq.Context()
    rogue = context.socket(zmq.PUSH)
    rogue.connect(locations.endpoints_for(db).pull)
    first = codec.encode_message("fenced-check", 1, [hello_op()])
    rogue.send(first)
    reader = Reader(db)
    wait_until(
        lambda: reader.get_instance("fenced-check"), 20, "the rogue connection to reach the old writer"
    )

    old.signal(signal.SIGSTOP)
    # Sent to the stopped writer's connection: it may only read these after it resumes.
    rogue.send(
        msgpack.packb(
            [
                1,
                "fenced-check",
                2,
                [
                    [
                        "create_workflow",
                        {
                            "id": "w-after-stop",
                            "workflow_name": "must not commit",
                            "metadata": "{}",
                            "at_us": 2,
                        },
                    ]
                ],
            ]
        )
    )
    standby.wait_holding_lease(timeout=30)
    # A client connected to the stopped writer notices the new epoch and resends to the new one.
    waiting_client.proceed()
    assert waiting_client.finish(timeout=60)["flushed"] is True

    old.signal(signal.SIGCONT)
    assert old.wait_exit(timeout=20) == 4
    assert "lost the writer lease" in old.log()
    assert reader.get_workflow("w-after-stop") is None
    assert reader.get_writer_status().pid == standby.pid
    assert reader.count_rows()["workflow_executions"] == 5
    # The exiting old writer removed the socket path; the new writer binds it again for new clients.
    report = clients(db, "--label", "late", "--workflows", "2").finish(timeout=60)
    assert report["flushed"] is True
    rogue.close(linger=0)
    context.term()


def _freeze_inside_a_transaction(db, writers, clients):
    """A writer and a standby under two flooding clients, the writer stopped holding the write lock."""
    import sqlite3

    old = writers(db)
    old.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    flood = [
        clients(db, "--label", f"f{n}", "--workflows", "3000", "--tasks", "3", "--logs", "3")
        for n in range(2)
    ]
    for client in flood:
        client.read_event()
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)

    def frozen_holding_the_lock() -> bool:
        old.signal(signal.SIGSTOP)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True  # stopped with the write lock held: what these tests need
        probe.execute("ROLLBACK")
        old.signal(signal.SIGCONT)
        return False

    wait_until(frozen_holding_the_lock, 60, "the writer to be stopped inside a transaction")
    probe.close()
    return old, standby, flood


def _check_nothing_lost(db, flood) -> None:
    reports = [client.finish(timeout=120) for client in flood]
    assert all(report["flushed"] for report in reports)
    counts = Reader(db).count_rows()
    assert counts["workflow_executions"] == 6000 and counts["task_executions"] == 18000
    assert Reader(db).query("PRAGMA integrity_check") == [("ok",)]


def test_a_writer_resumed_after_being_frozen_in_a_transaction_commits_nothing_and_exits(db, writers, clients):
    old, standby, flood = _freeze_inside_a_transaction(db, writers, clients)
    reader = Reader(db)
    epoch = reader.get_writer_status().epoch
    heartbeat = reader.get_writer_status().heartbeat
    # Keep it stopped until it is presumed dead, then let it run again.
    wait_until(
        lambda: (time.time() - heartbeat.timestamp()) > LEASE_STALE_AFTER_S + 1, 30, "the writer to go stale"
    )
    old.signal(signal.SIGCONT)
    assert old.wait_exit(timeout=20) == 4
    assert "giving the lease up" in old.log()
    standby.wait_holding_lease(timeout=30)
    assert reader.get_writer_status().epoch == epoch + 1
    _check_nothing_lost(db, flood)


def test_a_writer_frozen_in_a_transaction_and_never_resumed_is_killed(db, writers, clients):
    old, standby, flood = _freeze_inside_a_transaction(db, writers, clients)
    standby.wait_holding_lease(timeout=LEASE_STALE_AFTER_S + LOCKED_OUT_KILL_AFTER_S + 20)
    assert old.wait_exit(timeout=10) == -signal.SIGKILL
    assert "holds the database's write lock; killing it" in standby.log()
    _check_nothing_lost(db, flood)


@pytest.mark.parametrize(
    ("stalled_at", "committed"),
    [("BEGIN IMMEDIATE", False), ("COMMIT", True)],
)
def test_a_writer_stalled_while_taking_the_lock_or_committing_gives_the_lease_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalled_at: str, committed: bool
) -> None:
    # The chaos runs found a SIGSTOP that landed outside the transaction's body: the writer
    # resumed and went on as the writer others had presumed dead. A stall at either end of
    # the transaction now counts as silence too.
    monkeypatch.setattr(lease_module, "SELF_FENCE_AFTER_S", 0.2)
    db = tmp_path / "workflows.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, time.time_ns() // 1000)
    lease = WriterLease(conn, leases.current_process(), "ipc:///not-bound")
    assert lease.acquire(standby=False, should_stop=lambda: False)

    def stall(statement: str) -> None:
        if statement == stalled_at:
            time.sleep(0.3)  # the stall is the point: a SIGSTOP at that statement, past the limit

    conn.set_trace_callback(stall)
    with (
        pytest.raises(LeaseLostError, match="giving the lease up"),
        lease.transaction(time.time_ns() // 1000),
    ):
        conn.execute("INSERT INTO counters (name, value) VALUES ('fence-probe', 1)")
    conn.set_trace_callback(None)
    other = sqlite3.connect(db)
    try:
        rows = other.execute("SELECT value FROM counters WHERE name = 'fence-probe'").fetchall()
    finally:
        other.close()
        conn.close()
    assert rows == ([(1,)] if committed else [])  # a commit that happened stands; none is added
