"""Exactly one writer: a writer stopped until it was presumed dead commits nothing when it resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import FAST_LEASE_STALE_S, FAST_LOCKED_OUT_KILL_S, Transport, hello_op, wait_until

from see_persistence import Reader, leases
from see_persistence.protocol import codec
from see_persistence.writer import lease as lease_module
from see_persistence.writer.lease import LEASE_STALE_AFTER_S, WriterLease
from see_persistence.writer.storage import immediate_transaction, open_write_connection, upgrade_schema
from see_persistence.writer.wal_locks import wal_write_lock_holders


# Over ipc and TCP: a client connected to the stopped writer over TCP must find the new one on
# other ports through the lease. The PostgreSQL writer's fencing (the standby ends a frozen
# holder's session) is test_postgresql_writer.py's; the rest of this file is SQLite's write
# lock and its file, and stays there.
@pytest.mark.usefixtures("fast_lease")
def test_a_stopped_writer_that_lost_its_lease_commits_nothing_and_exits(
    transport: Transport, db, writers, clients
):
    old = writers(db)
    old.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    waiting_client = clients(db, "--label", "early", "--workflows", "5", "--wait-before-record")
    waiting_client.read_event()
    context = zmq.Context()
    rogue = transport.connect(context, zmq.PUSH, db)
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


# Per flooding client: enough that the writer is still committing its backlog when it is
# stopped (the clients print "started" before they record, and the writer is stopped within
# a few tries), and that the clients go on recording while it is stopped.
FLOOD_WORKFLOWS = 1000
FLOOD_TASKS = 3
FLOOD_ARGS = ("--workflows", str(FLOOD_WORKFLOWS), "--tasks", str(FLOOD_TASKS), "--logs", "3")


def _freeze_inside_a_transaction(db, writers, clients, *, with_standby: bool = True):
    """A writer (and a standby) under two flooding clients, the writer stopped holding the write lock."""
    old = writers(db)
    old.wait_holding_lease()
    standby = None
    if with_standby:
        standby = writers(db, "--standby")
        wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    flood = [
        clients(db, "--label", f"f{n}", *FLOOD_ARGS)
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
    assert counts["workflow_executions"] == 2 * FLOOD_WORKFLOWS
    assert counts["task_executions"] == 2 * FLOOD_WORKFLOWS * FLOOD_TASKS
    assert Reader(db).query("PRAGMA integrity_check") == [("ok",)]


@pytest.mark.usefixtures("fast_lease")
def test_a_writer_resumed_after_being_frozen_in_a_transaction_commits_nothing_and_exits(db, writers, clients):
    old, standby, flood = _freeze_inside_a_transaction(db, writers, clients)
    reader = Reader(db)
    epoch = reader.get_writer_status().epoch
    heartbeat = reader.get_writer_status().heartbeat
    # Keep it stopped until it is presumed dead, then let it run again.
    wait_until(
        lambda: (time.time() - heartbeat.timestamp()) > FAST_LEASE_STALE_S + 1, 30, "the writer to go stale"
    )
    old.signal(signal.SIGCONT)
    assert old.wait_exit(timeout=30) == 4
    # It committed what it had begun (the lock was its own), stood aside, and found the lease taken.
    assert "commits nothing for" in old.log()
    assert "lost the writer lease" in old.log()
    standby.wait_holding_lease(timeout=30)
    assert reader.get_writer_status().epoch == epoch + 1
    _check_nothing_lost(db, flood)


@pytest.mark.usefixtures("fast_lease")
def test_a_writer_frozen_past_the_stale_limit_with_nobody_to_take_over_carries_on(db, writers, clients):
    # Issue 13: a slow disk (here a SIGSTOP) made the only writer give the lease up, and
    # nothing was written from then on. With no standby it must find the lease still its own.
    old, _, flood = _freeze_inside_a_transaction(db, writers, clients, with_standby=False)
    reader = Reader(db)
    status = reader.get_writer_status()
    wait_until(
        lambda: (time.time() - status.heartbeat.timestamp()) > FAST_LEASE_STALE_S + 1,
        30,
        "the writer to go stale",
    )
    old.signal(signal.SIGCONT)
    wait_until(lambda: "carrying on as epoch" in old.log(), 30, "the writer to carry on after standing aside")
    _check_nothing_lost(db, flood)
    assert old.process.poll() is None
    after = reader.get_writer_status()
    assert (after.pid, after.epoch, after.alive) == (status.pid, status.epoch, True)
    assert "lost the writer lease" not in old.log()


@pytest.mark.usefixtures("fast_lease")
def test_a_writer_frozen_in_a_transaction_and_never_resumed_is_killed(db, writers, clients):
    old, standby, flood = _freeze_inside_a_transaction(db, writers, clients)
    standby.wait_holding_lease(timeout=FAST_LEASE_STALE_S + FAST_LOCKED_OUT_KILL_S + 20)
    assert old.wait_exit(timeout=10) == -signal.SIGKILL
    assert "holds the database's write lock; killing it" in standby.log()
    _check_nothing_lost(db, flood)


def _lease_with_a_short_self_fence(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[sqlite3.Connection, WriterLease]:
    """A connection to a fresh file and the lease held on it; an overrun is past 0.2 s."""
    monkeypatch.setattr(lease_module, "SELF_FENCE_AFTER_S", 0.2)
    conn = open_write_connection(db)
    upgrade_schema(conn, time.time_ns() // 1000)
    lease = WriterLease(conn, leases.current_process(), "ipc:///not-bound")
    assert lease.acquire(standby=False, should_stop=lambda: False)
    return conn, lease


@pytest.mark.parametrize("stalled_at", ["BEGIN IMMEDIATE", "INSERT", "COMMIT"])
def test_a_stalled_transaction_commits_and_is_noted_as_an_overrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalled_at: str
) -> None:
    # The chaos runs found a SIGSTOP that landed outside the transaction's body: a stall at
    # either end counts as silence too. The lock was the writer's from its fence to its
    # COMMIT, so what it did stands; the writer then stands aside (the process tests above).
    db = tmp_path / "workflows.db"
    conn, lease = _lease_with_a_short_self_fence(db, monkeypatch)

    def stall(statement: str) -> None:
        if statement.startswith(stalled_at):
            time.sleep(0.3)  # the stall is the point: a SIGSTOP at that statement, past the limit

    conn.set_trace_callback(stall)
    assert lease.overrun is None
    with lease.transaction(time.time_ns() // 1000):
        conn.execute("INSERT INTO counters (name, value) VALUES ('fence-probe', 1)")
    conn.set_trace_callback(None)
    assert lease.overrun is not None and lease.overrun.seconds > 0.2
    assert lease.still_mine() is None
    assert lease.stand_aside_until(lease.overrun) > lease.overrun.committed_at + LEASE_STALE_AFTER_S
    other = sqlite3.connect(db)
    try:
        rows = other.execute("SELECT value FROM counters WHERE name = 'fence-probe'").fetchall()
    finally:
        other.close()
        conn.close()
    assert rows == [(1,)]


@pytest.mark.usefixtures("fast_lease")
def test_a_healthy_writer_is_not_killed_for_another_programs_write_lock(db, writers, clients):
    # Issue 13: another program held the write lock for 20 s; the standby, seeing the writer's
    # heartbeat stale and the lock taken, SIGKILLed the healthy writer. The lock was not its.
    old = writers(db)
    old.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    other_program = sqlite3.connect(db, timeout=0, isolation_level=None)
    other_program.execute("BEGIN IMMEDIATE")
    held_since = time.monotonic()
    try:
        wait_until(
            lambda: "is held by pid" in standby.log()
            and time.monotonic() - held_since > FAST_LEASE_STALE_S + FAST_LOCKED_OUT_KILL_S + 2,
            FAST_LEASE_STALE_S + FAST_LOCKED_OUT_KILL_S + 30,
            "the standby to find the lock held by another program for longer than its kill limit",
        )
        assert old.process.poll() is None
    finally:
        other_program.execute("ROLLBACK")
        other_program.close()
    assert "killing it" not in standby.log()
    report = clients(db, "--label", "after", "--workflows", "20").finish(timeout=60)
    assert report["flushed"] is True
    # Whichever writer got the lock first once it was free holds the lease; the old one was
    # never killed: it serves, or it found the lease taken and left with 4.
    assert old.process.poll() in (None, 4)
    holder = Reader(db).get_writer_status()
    assert holder.alive and holder.pid in (old.pid, standby.pid)


def test_the_write_lock_holders_are_read_from_proc_locks(tmp_path: Path) -> None:
    db = tmp_path / "workflows.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, time.time_ns() // 1000)
    assert wal_write_lock_holders(db) == frozenset()
    conn.execute("BEGIN IMMEDIATE")
    try:
        assert wal_write_lock_holders(db) == frozenset({os.getpid()})
    finally:
        conn.execute("ROLLBACK")
    info = os.stat(f"{db}-shm")
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    listing = tmp_path / "locks"
    listing.write_text(
        f"1: POSIX  ADVISORY  WRITE 4242 {device} 120 120\n"
        f"1: -> POSIX  ADVISORY  WRITE 4343 {device} 120 120\n"  # waiting, not holding
        f"2: POSIX  ADVISORY  READ 4444 {device} 120 120\n"
        f"3: POSIX  ADVISORY  WRITE 4545 {device} 0 EOF\n"
        f"4: POSIX  ADVISORY  WRITE 4646 {device} 121 121\n"
        f"5: FLOCK  ADVISORY  WRITE 4747 {device} 0 EOF\n"
        "6: POSIX  ADVISORY  WRITE 4848 00:01:1 120 120\n"
    )
    assert wal_write_lock_holders(db, str(listing)) == frozenset({4242, 4545})
    # btrfs, overlayfs: /proc/locks names another device than stat(); this process's own lock
    # on the -shm (SQLite's byte 128) says which, and a same inode on another device is not it.
    listing.write_text(
        f"1: POSIX  ADVISORY  READ {os.getpid()} 00:2f:{info.st_ino} 128 128\n"
        f"2: POSIX  ADVISORY  WRITE 4242 00:2f:{info.st_ino} 120 120\n"
        f"3: POSIX  ADVISORY  WRITE 4343 08:01:{info.st_ino} 120 120\n"
    )
    assert wal_write_lock_holders(db, str(listing)) == frozenset({4242})
    assert wal_write_lock_holders(tmp_path / "missing.db") is None
    conn.close()


def test_the_transaction_after_an_overrun_stands_aside_first_whoever_begins_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every commit renews the heartbeat and starts the standbys' watch over: a heartbeat, a
    # sweep or a prune chunk must not commit between an overrun and the writer standing aside.
    db = tmp_path / "workflows.db"
    conn, lease = _lease_with_a_short_self_fence(db, monkeypatch)
    stood_aside: list[tuple[float, bool]] = []
    lease.stand_aside = lambda overrun: stood_aside.append((overrun.seconds, conn.in_transaction))
    conn.set_trace_callback(lambda statement: time.sleep(0.3) if statement.startswith("INSERT") else None)
    with lease.transaction(time.time_ns() // 1000):
        conn.execute("INSERT INTO counters (name, value) VALUES ('slow', 1)")
    conn.set_trace_callback(None)
    # The short limit was for the stalled transaction only: a heartbeat that a loaded machine
    # holds past 0.2 s would be a second overrun.
    monkeypatch.setattr(lease_module, "SELF_FENCE_AFTER_S", 60.0)
    assert stood_aside == [] and lease.overrun is not None
    lease.heartbeat(time.time_ns() // 1000)
    assert len(stood_aside) == 1 and stood_aside[0][0] > 0.2
    assert stood_aside[0][1] is False  # before BEGIN: the lock is free while it waits
    assert lease.overrun is None
    lease.heartbeat(time.time_ns() // 1000)
    assert len(stood_aside) == 1  # once per overrun
    conn.close()


def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    # A deferred constraint fails at COMMIT and SQLite keeps the transaction open: every BEGIN
    # after it would fail, and each batch would be taken for one at fault.
    conn = open_write_connection(tmp_path / "workflows.db")
    upgrade_schema(conn, time.time_ns() // 1000)
    conn.execute("PRAGMA defer_foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError), immediate_transaction(conn):
        conn.execute(
            "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at)"
            " VALUES ('t', 'no-such-workflow', 'x', 'pending', '2026-01-01T00:00:00.000000+00:00')"
        )
    assert not conn.in_transaction
    with immediate_transaction(conn):
        conn.execute("INSERT INTO counters (name, value) VALUES ('after', 1)")
    conn.close()
