"""WAL checkpoints run beside the writer's commits, not inside them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import wait_until

from see_persistence import Client, Reader, Writer
from see_persistence.writer import checkpointer
from see_persistence.writer.checkpointer import WAL_RESTART_PAGES

EVENTS = 20_000
MESSAGE = "m" * 300  # about 20k rows of 400 bytes: several MB of WAL


def test_the_writer_checkpoints_the_wal_into_the_file_while_it_runs(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    size_before = os.path.getsize(db)
    with Client(db) as client:
        for n in range(EVENTS):
            client.log_audit_event("bulk", f"{n:06d}{MESSAGE}")
        assert client.flush(timeout=60)
    # The rows reach the database file itself only through a checkpoint, and SQLite's own
    # runs only once the WAL holds WAL_RESTART_PAGES (more than these rows fill): this growth
    # is the writer's checkpointer at work.
    wait_until(lambda: os.path.getsize(db) > size_before + 4_000_000, 15, "the main file to grow")
    reader = Reader(db)
    assert reader.count_rows()["audit_events"] == EVENTS
    reader.close()  # the last connection to close checkpoints everything and removes the WAL
    assert writer.process.poll() is None
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    assert not os.path.exists(f"{db}-wal") or os.path.getsize(f"{db}-wal") == 0


def test_the_writer_leaves_sqlites_own_checkpoints_to_restart_the_wal_only(db):
    writer = Writer(db)
    assert writer.initialize()
    try:
        conn = writer._conn
        assert conn is not None
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (WAL_RESTART_PAGES,)
    finally:
        writer.shutdown()


def test_the_wal_stays_bounded_while_the_writer_never_rests(db, writers):
    # A checkpoint on another thread never finds the WAL fully copied while the writer keeps
    # appending, so the WAL could start over only at the writer's own rare checkpoint: without
    # it the WAL grew by every byte written (576 MB in 16 s).
    writers(db).wait_holding_lease()
    wal = f"{db}-wal"
    largest = 0
    with Client(db) as client:
        for n in range(40_000):  # about 140 MB of rows, more than the WAL may hold
            client.log_audit_event("big", f"{n:06d}" + "b" * 3500)
            if n % 1000 == 0 and os.path.exists(wal):
                largest = max(largest, os.path.getsize(wal))
        assert client.flush(timeout=120)
    largest = max(largest, os.path.getsize(wal))
    # The rows go into the file itself, through the checkpointer, which follows the commits
    # by up to a checkpoint's length: wait for it rather than race it.
    wait_until(lambda: os.path.getsize(db) > 130_000_000, 30, "the rows to be checkpointed into the file")
    largest = max(largest, os.path.getsize(wal))
    assert largest < 100_000_000


def test_a_wal_pinned_by_another_programs_read_transaction_is_reported_with_its_pid(
    db, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 13: beside the seed's Rust code the WAL grew to 3.3 GB. A read transaction that
    # another program leaves open keeps the WAL from starting over; the writer cannot end it,
    # but it says so, and who reads.
    monkeypatch.setattr(checkpointer, "PINNED_WAL_WARN_FRAMES", 50)
    writer = Writer(db)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    reader_process = None
    try:
        assert writer.wait_ready(20)
        with Client(db) as client:
            client.create_workflow("before the reader")
            assert client.flush(timeout=20)
            reader_process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('BEGIN');"
                    " c.execute('SELECT COUNT(*) FROM workflow_executions').fetchall();"
                    " print('reading', flush=True); sys.stdin.readline()",
                    str(db),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert reader_process.stdout is not None
            assert reader_process.stdout.readline().strip() == "reading"
            with caplog.at_level(logging.WARNING, logger="see_persistence.writer"):
                for n in range(3000):
                    client.create_workflow(f"w{n}", metadata={"n": n, "padding": "x" * 200})
                assert client.flush(timeout=60)
                wait_until(
                    lambda: any(f"pid {reader_process.pid}" in r.getMessage() for r in caplog.records),
                    20,
                    "the writer to report the pinned WAL and who reads",
                )
        assert any("keeps an old read transaction open" in r.getMessage() for r in caplog.records)
    finally:
        if reader_process is not None:
            reader_process.kill()
            reader_process.wait(timeout=10)
        writer.stop()
        thread.join(timeout=20)
