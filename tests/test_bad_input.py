"""Bad input never stops the writer: every bad message lands in dead_letters with a reason.

A rogue instance that registers itself (a hello first, at seq 1) gets its bad operations
dead-lettered; one that never says hello has nothing applied, and no instance row.

The tests that ask for `database` send to the PostgreSQL writer too, except the oversized
message, which goes over TCP with CURVE instead (where the socket's cut is a TCP peer's
disconnection); bad handshakes are test_tcp_transport.py's. The exact strings test stays on SQLite: PostgreSQL
text cannot hold U+0000, which its writer refuses as a dead letter (test_postgresql_writer.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import Database, Transport, wait_until

from see_persistence import Reader, leases, locations
from see_persistence.protocol import codec


def _push(db: Path | str, transport: Transport | None = None) -> tuple[zmq.Context, zmq.Socket]:
    context = zmq.Context()
    if transport is not None:
        return context, transport.connect(context, zmq.PUSH, db)
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    assert isinstance(db, Path)
    sock.connect(locations.endpoints_for(db).pull)
    return context, sock


def _op(name: str, **payload: object) -> list[object]:
    return [name, {**payload, "at_us": 1_700_000_000_000_000}]


def _hello(token: str | None = None) -> list[object]:
    """A hello registering this test process (`token`: the instance's; None: an older client's)."""
    me = leases.current_process()
    payload: dict[str, Any] = {"pid": me.pid, "process_create_time": me.create_time, "host": me.host}
    if token is not None:
        payload["token"] = token
    return _op("hello", **payload)


def _registering(instance_id: str, *ops: list[object]) -> bytes:
    """Seq 1 of a new instance: its hello, then `ops`; version 2 with a token of its own."""
    token = (instance_id * 16)[:32]
    return msgpack.packb([2, instance_id, 1, token, [_hello(token), *ops]])


# Over TCP the messages are the same bytes after CURVE: test_tcp_transport.py sends a few kinds.
@pytest.mark.over("sqlite-ipc", "postgresql-tcp")
def test_each_kind_of_bad_message_becomes_a_dead_letter_while_good_traffic_commits(
    database: Database, writers, clients
):
    db = database.db
    writers(db).wait_holding_lease()
    good = clients(db, "--label", "good", "--workflows", "20", "--wait-before-record")
    good.read_event()
    context, sock = _push(db, database.transport)
    foreign_key = "FOREIGN KEY constraint failed" if database.sqlite else "violates foreign key constraint"

    def bad_messages(round_: int) -> dict[str, bytes]:
        return _bad_messages(f"-{round_}", foreign_key)

    for raw in bad_messages(1).values():
        sock.send(raw)
    good.proceed()
    for raw in bad_messages(2).values():  # and again, while the good client records
        sock.send(raw)
    report = good.finish()
    assert report["flushed"] is True
    expected = bad_messages(1)
    reader = database.reader
    wait_until(lambda: reader.count_rows()["dead_letters"] >= 2 * len(expected), 20, "all dead letters")
    rows = reader.query("SELECT reason, raw, instance_id FROM dead_letters")
    reasons = [r[0] for r in rows]
    for reason in expected:
        assert sum(reason in r for r in reasons) == 2, (reason, reasons)
    assert all(r[1] for r in rows)  # the raw bytes are kept
    assert len(reader.get_workflows_for_instance(report["instance_id"])) == 20
    # The sequence number of a rogue instance whose operation failed still advanced, so a
    # resend of that message is a duplicate, not a second dead letter.
    assert reader.get_instance("rogue-e-1").last_seq == 1
    assert reader.get_instance("rogue-e-1").rejected == 1
    sock.send(expected[foreign_key])
    # A rogue that never says hello: nothing applied, no dead letter, no instance row.
    silent = [_op("create_workflow", id="w-silent", workflow_name="silent", metadata="{}")]
    sock.send(msgpack.packb([1, "rogue-silent", 1, silent]))
    sock.send(msgpack.packb([2, "rogue-silent-2", 4, "s" * 32, silent]))
    marker = [_op("create_workflow", id="w-marker", workflow_name="marker", metadata="{}")]
    sock.send(_registering("marker-instance", *marker))  # one connection is FIFO
    wait_until(lambda: reader.get_workflow("w-marker"), 20, "the marker after the resend")
    assert sum(foreign_key in r[0] for r in reader.query("SELECT reason FROM dead_letters")) == 2
    assert reader.count_rows()["dead_letters"] == 2 * len(expected)
    assert reader.get_workflow("w-silent") is None
    assert reader.get_instance("rogue-silent") is None and reader.get_instance("rogue-silent-2") is None
    sock.close()
    context.term()


def _bad_messages(suffix: str, foreign_key: str) -> dict[str, bytes]:
    """Bad messages by a reason each becomes (`foreign_key`: the backend's words for that one)."""
    wf = "0190a0a0-0000-7000-8000-00000000f00d"
    return {
        "not msgpack": b"\xc1\xc1\xc1",
        "must be a msgpack array": msgpack.packb({"v": 1}),
        "must have 5 items (version 2) or 4 (version 1), got 3": msgpack.packb([1, "x", 1]),
        "unsupported protocol version 99": msgpack.packb([99, "rogue-a" + suffix, 1, [_op("goodbye")]]),
        "seq must be an integer": msgpack.packb([1, "rogue-b" + suffix, 0, [_op("goodbye")]]),
        "token must be ASCII text": msgpack.packb([2, "rogue-i" + suffix, 1, "short", [_hello("short")]]),
        "unknown operation 'drop_tables'": _registering("rogue-c" + suffix, ["drop_tables", {}]),
        "workflow_name must not be empty": _registering(
            "rogue-d" + suffix, _op("create_workflow", id=wf, workflow_name=" ", metadata="{}")
        ),
        foreign_key: _registering(
            "rogue-e" + suffix,
            _op(
                "create_task", id="t-1", workflow_id="no-such-workflow", task_name="orphan", execution_order=1
            ),
        ),
        "no record with id 'no-such-task'": _registering(
            "rogue-f" + suffix, _op("append_task_log", id="no-such-task", line="x")
        ),
        "metadata is not valid JSON": _registering(
            "rogue-g" + suffix, _op("create_workflow", id=wf, workflow_name="n", metadata="{nope")
        ),
        # The Rust core's serde_json would read it back as 1.1805916207174113e+21.
        'metadata["huge"] is 1180591620717411303425, outside the 64-bit range': _registering(
            "rogue-h" + suffix,
            _op("create_workflow", id=wf, workflow_name="n", metadata='{"huge":1180591620717411303425}'),
        ),
        # Its hello is refused (its pid is none), and so is the rest: nothing of an instance
        # that could not register is applied.
        "pid must be a positive process id": msgpack.packb(
            [
                1,
                "rogue-j" + suffix,
                1,
                [_op("hello", pid=0, process_create_time=1.0, host="h"), _op("goodbye")],
            ]
        ),
    }


def test_strings_are_stored_exactly_as_sent(db, writers):
    writers(db).wait_holding_lease()
    context, sock = _push(db)
    tricky = "nul\x00byte '; DROP TABLE workflow_executions; -- \u00e9\U0001f600"
    ops = [
        _op("create_workflow", id="w-tricky", workflow_name=tricky, metadata='{"k": "\\u0000"}'),
        _op("create_task", id="t-tricky", workflow_id="w-tricky", task_name=tricky, execution_order=-5),
        _op("append_task_log", id="t-tricky", line=tricky),
    ]
    sock.send(codec.encode_message("exact-instance", 1, [(n, p) for n, p in [_hello(), *ops]]))
    reader = Reader(db)
    run = wait_until(lambda: reader.get_workflow("w-tricky"), 20, "the workflow")
    assert run.workflow_name == tricky
    assert run.metadata == {"k": "\x00"}
    task = reader.get_tasks_for_workflow("w-tricky")[0]
    assert task.task_name == tricky and task.logs == [tricky] and task.execution_order == -5
    sock.close()
    context.term()


# The socket's limit, over both transports (the PostgreSQL writer sets the same limit on its
# TCP socket: writer/pg_service.py).
@pytest.mark.over("sqlite-ipc", "sqlite-tcp")
def test_an_oversized_message_is_cut_off_by_the_socket_and_the_writer_goes_on(
    database: Database, writers, clients
):
    db = database.db
    writer = writers(db)
    writer.wait_holding_lease()
    context, sock = _push(db, database.transport)
    sock.send(b"\x00" * (codec.MAX_MESSAGE_BYTES + 1))
    report = clients(db, "--workflows", "3").finish()
    assert report["flushed"] is True
    assert writer.process.poll() is None
    assert database.counts()["workflow_executions"] == 3
    assert database.counts()["dead_letters"] == 0  # cut off by the socket: nothing reached the writer
    sock.close()
    context.term()


@pytest.mark.over("sqlite-ipc", "postgresql-tcp")  # what is kept is the backend's; the transport adds nothing
def test_the_dead_letter_table_keeps_the_newest_rows_and_counts_the_dropped(database: Database, writers):
    db = database.db
    writers(db, "--dead-letters-kept", "10").wait_holding_lease()
    context, sock = _push(db, database.transport)
    for n in range(25):
        sock.send(b"garbage-%d" % n)
    marker = [_op("create_workflow", id="w-marker", workflow_name="marker", metadata="{}")]
    sock.send(_registering("marker-instance", *marker))
    reader = database.reader
    wait_until(lambda: reader.get_workflow("w-marker"), 20, "the marker after the garbage")
    kept = [bytes(r[0]) for r in reader.query("SELECT raw FROM dead_letters ORDER BY id")]
    assert kept == [b"garbage-%d" % n for n in range(15, 25)]
    assert reader.query("SELECT value FROM counters WHERE name = 'dead_letters_dropped'") == [(15,)]
    sock.close()
    context.term()
