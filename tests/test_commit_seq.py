"""The commit number: monotonic per database, kept in the writer_lease row, carried over on takeover,
and published with each commit on the change feed.

The process tests run over ipc and over TCP with CURVE (a takeover there moves the writer to
other ports; the feed's SUB is a CURVE client). SQLite only: the PostgreSQL writer numbers no
commits and publishes no feed yet (branch pgcomplete builds both).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest
import zmq
from conftest import Transport, wait_until

from see_persistence import leases
from see_persistence.protocol import feed
from see_persistence.protocol.feed import FeedNotice, Kind
from see_persistence.writer.lease import WriterLease, read_lease
from see_persistence.writer.storage import open_write_connection, upgrade_schema


def _now_us() -> int:
    return time.time_ns() // 1000


def _held_lease(db: Path) -> tuple[sqlite3.Connection, WriterLease]:
    conn = open_write_connection(db)
    upgrade_schema(conn, _now_us())
    lease = WriterLease(conn, leases.current_process(), "ipc:///not-bound")
    assert lease.acquire(standby=False, should_stop=lambda: False)
    return conn, lease


def _row_seq(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    row = read_lease(conn)
    assert row is not None
    return row.commit_seq, row.feed_id


def test_every_commit_is_numbered_in_the_file_and_in_memory(tmp_path: Path) -> None:
    conn, lease = _held_lease(tmp_path / "w.db")
    seen: list[int] = []
    lease.on_commit = seen.append
    assert lease.commit_seq == 0 and lease.feed_id != 0
    for _ in range(3):
        with lease.transaction(_now_us()):
            pass
    assert lease.commit_seq == 3
    assert _row_seq(conn) == (3, lease.feed_id)
    assert seen == [1, 2, 3]


def test_a_rolled_back_transaction_leaves_no_hole(tmp_path: Path) -> None:
    conn, lease = _held_lease(tmp_path / "w.db")
    seen: list[int] = []
    lease.on_commit = seen.append
    with lease.transaction(_now_us()):
        pass
    with pytest.raises(RuntimeError), lease.transaction(_now_us()):
        raise RuntimeError("the batch failed")
    assert lease.commit_seq == 1 and _row_seq(conn)[0] == 1
    with lease.transaction(_now_us()):
        pass
    assert lease.commit_seq == 2 and _row_seq(conn)[0] == 2
    assert seen == [1, 2]


def test_after_a_failed_transaction_the_number_is_read_back_from_the_file(tmp_path: Path) -> None:
    # A COMMIT that raised may still have been written: the file, not the count, is the truth.
    conn, lease = _held_lease(tmp_path / "w.db")
    with pytest.raises(RuntimeError), lease.transaction(_now_us()):
        raise RuntimeError("as if the COMMIT had failed")
    conn.execute("UPDATE writer_lease SET commit_seq = 41")
    with lease.transaction(_now_us()):
        pass
    assert lease.commit_seq == 42 and _row_seq(conn)[0] == 42


def test_a_takeover_carries_the_number_on_with_a_new_feed_id(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    conn, first = _held_lease(db)
    for _ in range(5):
        with first.transaction(_now_us()):
            pass
    first.release(_now_us())
    _, second = _held_lease(db)
    assert second.commit_seq == 5
    assert second.feed_id not in (0, first.feed_id)
    with second.transaction(_now_us()):
        pass
    assert _row_seq(conn) == (6, second.feed_id)


def test_a_row_written_before_commit_numbers_counts_from_zero(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, _now_us())
    conn.execute(
        "INSERT INTO writer_lease (id, pid, process_create_time, host, endpoint, epoch, acquired_at,"
        " heartbeat_at, released_at) VALUES (1, 1, 0, 'old', 'ipc:///x', 4, 't', 't', 't')"
    )
    _, lease = _held_lease(db)
    assert lease.epoch == 5 and lease.commit_seq == 0
    with lease.transaction(_now_us()):
        pass
    assert _row_seq(conn)[0] == 1


def test_the_columns_are_added_to_a_file_that_lacks_them(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, _now_us())
    conn.execute("ALTER TABLE writer_lease DROP COLUMN feed_id")
    conn.execute("ALTER TABLE writer_lease DROP COLUMN commit_seq")
    upgrade_schema(conn, _now_us())
    columns = {row[1] for row in conn.execute("PRAGMA table_info(writer_lease)")}
    assert {"commit_seq", "feed_id"} <= columns


def test_the_commit_number_only_grows_across_a_sigkill_takeover(
    transport: Transport, db, writers, clients
) -> None:
    first = writers(db)
    first.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    assert clients(db, "--label", "before", "--workflows", "20").finish(timeout=60)["flushed"] is True
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    before, old_feed = _row_seq(conn)
    assert before is not None and before > 0
    first.signal(signal.SIGKILL)
    assert first.wait_exit() == -signal.SIGKILL
    standby.wait_holding_lease(timeout=30)
    assert clients(db, "--label", "after", "--workflows", "5").finish(timeout=60)["flushed"] is True
    after, new_feed = _row_seq(conn)
    assert after is not None and after > before
    assert new_feed not in (None, old_feed)
    conn.close()


def test_the_writer_publishes_one_numbered_notice_per_commit(
    transport: Transport, db, writers, clients
) -> None:
    writer = writers(db)
    writer.wait_holding_lease()
    context = zmq.Context()
    sub = transport.connect(context, zmq.SUB, db)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, feed.FEED_TOPIC)
    notices: list[FeedNotice] = []

    def receive() -> None:
        while sub.poll(0):
            notices.append(feed.decode_notice(sub.recv_multipart()))

    # A connecting SUB gets nothing before its subscription reached the writer: wait for a heartbeat's notice.
    wait_until(lambda: receive() or notices, 20, "a first feed notice")
    assert clients(db, "--label", "feed", "--workflows", "3").finish(timeout=60)["flushed"] is True

    def seen_workflows() -> int:
        receive()
        return sum(1 for n in notices for r in n.records if r.kind == Kind.WORKFLOW)

    wait_until(lambda: seen_workflows() >= 3, 20, "the workflows' notices")
    seqs = [n.seq for n in notices]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len({n.feed_id for n in notices}) == 1
    kinds = {r.kind for n in notices for r in n.records}
    assert {Kind.WORKFLOW, Kind.INSTANCE} <= kinds
    sub.close(linger=0)
    context.term()
