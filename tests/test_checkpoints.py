"""WAL checkpoints run beside the writer's commits, not inside them."""

from __future__ import annotations

import os
import signal

from conftest import wait_until

from see_persistence import Client, Reader, Writer

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
    # automatic one is off in the writer: this growth is the writer's checkpointer at work.
    wait_until(lambda: os.path.getsize(db) > size_before + 4_000_000, 15, "the main file to grow")
    reader = Reader(db)
    assert reader.count_rows()["audit_events"] == EVENTS
    reader.close()  # the last connection to close checkpoints everything and removes the WAL
    assert writer.process.poll() is None
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    assert not os.path.exists(f"{db}-wal") or os.path.getsize(f"{db}-wal") == 0


def test_the_writer_turns_sqlites_own_checkpoints_off_on_its_connection(db):
    writer = Writer(db)
    assert writer.initialize()
    try:
        conn = writer._conn
        assert conn is not None
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        writer.shutdown()
