"""Atomic batches: a writer killed at any instant leaves each message wholly in or wholly out."""

from __future__ import annotations

import signal
import sqlite3
import threading

import zmq
from conftest import hello_op, wait_until

from see_persistence import locations
from see_persistence.protocol import codec

OPS_PER_MESSAGE = 40


def _message(instance: str, seq: int) -> bytes:
    ops = [
        (
            "audit_event",
            {
                "id": f"{instance}-{seq}-{n}",
                "event_type": "atomic",
                "message": f"{instance}-{seq}",
                "workflow_id": None,
                "task_id": None,
                "data": "{}",
                "at_us": 1_700_000_000_000_000 + seq,
            },
        )
        for n in range(OPS_PER_MESSAGE)
    ]
    return codec.encode_message(instance, seq, [hello_op(), *ops] if seq == 1 else ops)


def test_a_writer_killed_under_load_leaves_no_message_half_applied(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    context = zmq.Context()
    stop = threading.Event()

    def flood(instance: str) -> None:
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 100)
        sock.connect(locations.endpoints_for(db).pull)
        seq = 1
        while not stop.is_set() and seq < 100_000:
            try:
                sock.send(_message(instance, seq))
                seq += 1
            except zmq.Again:
                pass
        sock.close()

    threads = [threading.Thread(target=flood, args=(f"atom-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    conn = sqlite3.connect(db)
    try:
        wait_until(
            lambda: conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()[0] > 20 * OPS_PER_MESSAGE,
            30,
            "the flood to commit",
        )
        writer.signal(signal.SIGKILL)
        writer.wait_exit()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        context.term()
    per_message = conn.execute("SELECT message, COUNT(*) FROM audit_events GROUP BY message").fetchall()
    assert per_message, "nothing committed"
    assert {count for _, count in per_message} == {OPS_PER_MESSAGE}
    for instance in ("atom-0", "atom-1"):
        row = conn.execute("SELECT last_seq FROM instances WHERE id = ?", (instance,)).fetchone()
        committed = conn.execute(
            "SELECT COUNT(DISTINCT message) FROM audit_events WHERE message LIKE ?", (f"{instance}-%",)
        ).fetchone()[0]
        # The recorded sequence number moves in the same transaction as the rows it covers.
        assert (row[0] if row else 0) == committed
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
