"""Atomic batches: a writer killed at any instant leaves each message wholly in or wholly out.

On an SQLite file and on PostgreSQL (the transaction is the backend's; over TCP the bytes are
the same messages, so the flood goes over ipc to SQLite and over TCP to the PostgreSQL writer).
"""

from __future__ import annotations

import signal
import threading

import pytest
import zmq
from conftest import Database, hello_op, wait_until

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


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")
def test_a_writer_killed_under_load_leaves_no_message_half_applied(database: Database, writers):
    db = database.db
    writer = writers(db)
    writer.wait_holding_lease()
    context = zmq.Context()
    stop = threading.Event()

    def flood(instance: str) -> None:
        sock = database.transport.connect(context, zmq.PUSH, db)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 100)
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
    reader = database.reader
    try:
        wait_until(
            lambda: reader.count_rows()["audit_events"] > 20 * OPS_PER_MESSAGE, 30, "the flood to commit"
        )
        writer.signal(signal.SIGKILL)
        writer.wait_exit()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        context.term()
    per_message = reader.query("SELECT message, COUNT(*) FROM audit_events GROUP BY message")
    assert per_message, "nothing committed"
    assert {count for _, count in per_message} == {OPS_PER_MESSAGE}
    for instance in ("atom-0", "atom-1"):
        row = reader.query("SELECT last_seq FROM instances WHERE id = ?", (instance,))
        committed = reader.query(
            "SELECT COUNT(DISTINCT message) FROM audit_events WHERE message LIKE ?", (f"{instance}-%",)
        )[0][0]
        # The recorded sequence number moves in the same transaction as the rows it covers.
        assert (row[0][0] if row else 0) == committed
    if database.sqlite:
        assert reader.query("PRAGMA integrity_check") == [("ok",)]
