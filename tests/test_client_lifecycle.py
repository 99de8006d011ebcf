"""Spawning a writer once per need, backing off when it cannot start, and close() and the
exit hook keeping to their timeouts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from conftest import wait_until

from see_persistence import Client, Reader
from see_persistence.client.spawn import SPAWN_MIN_INTERVAL_S, WriterSpawner


def test_a_cold_start_spawns_one_writer(db):
    with Client(db, spawn_writer=True) as client:
        wid = client.create_workflow("cold start")
        assert client.flush(timeout=30)
        # The sending thread saw no writer yet while the spawned one started: it did not
        # start a second one (which would have exited "another writer holds the lease").
        assert client.stats.spawns == 1 and client.stats.spawn_failures == 0
        assert client.spawn_error is None
    assert Reader(db).get_workflow(wid) is not None
    status = Reader(db).get_writer_status()
    assert status is not None and status.alive  # the spawned writer outlives the client, for now
    subprocess.run(["kill", str(status.pid)], check=True)
    wait_until(lambda: not Reader(db).get_writer_status().alive, 20, "the spawned writer to stop")


def test_a_writer_that_cannot_start_is_reported_and_retried_ever_more_rarely(tmp_path):
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are my notes, not a database\n" * 100)
    spawner = WriterSpawner(not_a_database)
    assert spawner.maybe_spawn(now=0.0)
    process = spawner._running
    assert process is not None
    process.wait(timeout=30)  # the real writer command, failing on the file
    assert not spawner.maybe_spawn(now=0.5)  # the failure is noted at this look...
    assert spawner.failures == 1 and spawner.last_error is not None
    assert str(not_a_database) in spawner.last_error and "exited with code 1" in spawner.last_error
    assert not spawner.maybe_spawn(now=0.5 + SPAWN_MIN_INTERVAL_S - 0.1)  # ...and it backs off
    assert spawner.maybe_spawn(now=0.5 + SPAWN_MIN_INTERVAL_S)
    spawner._running.wait(timeout=30)
    later = 0.5 + SPAWN_MIN_INTERVAL_S + 0.1
    assert not spawner.maybe_spawn(now=later) and spawner.failures == 2
    assert not spawner.maybe_spawn(now=later + 2 * SPAWN_MIN_INTERVAL_S - 0.1)  # twice as long now
    assert spawner.maybe_spawn(now=later + 2 * SPAWN_MIN_INTERVAL_S)
    spawner._running.wait(timeout=30)
    assert spawner.spawns == 3


def test_a_client_learns_why_its_writer_cannot_start(tmp_path):
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are my notes, not a database\n" * 100)
    client = Client(not_a_database, spawn_writer=True)
    client.create_workflow("never stored")
    wait_until(lambda: client.stats.spawn_failures >= 1, 30, "the spawn failure to be noticed")
    assert str(not_a_database) in (client.spawn_error or "")
    assert client.stats.spawns == 1  # not one every 2 s while the first one was starting
    assert client.close(timeout=0.2) is False


def test_close_keeps_to_its_timeout_with_no_writer(db):
    client = Client(db)
    client.create_workflow("nobody will take this")
    started = time.monotonic()
    assert client.close(timeout=2.0) is False
    # Before: 3.0 s (a second wait for the goodbye, then joining the sending thread); the
    # bound leaves a loaded machine the rest.
    assert time.monotonic() - started < 2.9


def test_the_exit_hook_keeps_to_its_timeout_with_no_writer(db):
    script = textwrap.dedent(
        f"""
        import sys, time
        from see_persistence import Client
        clients = [Client({str(db)!r}) for _ in range(3)]  # forgotten, never closed
        for client in clients:
            client.create_workflow("left behind")
        print(time.monotonic(), flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    process.wait(timeout=30)
    ended = time.monotonic()
    # CLOCK_MONOTONIC is shared by every process of the machine.
    # Before: 2 s for each forgotten client in turn (and more), here 6 s or more. Now 2 s for
    # them all together, and the interpreter's own exit on a loaded machine.
    assert ended - float(line) < 4.0
