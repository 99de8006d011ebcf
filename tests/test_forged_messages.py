"""One misbehaving local process must not silently cost another its records (issue 11, item 5).

An instance id belongs to the process whose hello registered it (with its secret token): a
message with that id but another token, or none, is a dead letter that neither advances the
instance's sequence nor touches it. No message makes an instance row without a hello. Dead
letters are bounded in bytes, and ended or dead instances leave after their retention.
Real writer processes, real client processes, real sockets.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from conftest import wait_until

from see_persistence import Reader, leases, locations
from see_persistence.protocol import codec, statements, timestamps

AT = 1_700_000_000_000_000
NO_SUCH_PID = 2**31 - 2  # a valid pid field, above any pid_max: no process has it
NOT_OWNER = "belongs to another sender"


@contextmanager
def pushing(db: Path) -> Iterator[zmq.Socket]:
    """A PUSH socket connected to the writer's PULL endpoint (one connection: FIFO)."""
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.setsockopt(zmq.SNDHWM, 0)  # queue everything: the test sends faster than the writer reads
    sock.connect(locations.endpoints_for(db).pull)
    try:
        yield sock
    finally:
        sock.close()
        context.term()


def hello(token: str | None, pid: int | None = None) -> tuple[str, dict[str, Any]]:
    """A hello for this test process (or another pid), with `token` (None: an older client's)."""
    me = leases.current_process()
    payload: dict[str, Any] = {
        "pid": me.pid if pid is None else pid,
        "process_create_time": me.create_time,
        "host": me.host,
        "at_us": time.time_ns() // 1000,
    }
    if token is not None:
        payload["token"] = token
    return ("hello", payload)


def workflow(wid: str) -> tuple[str, dict[str, Any]]:
    return ("create_workflow", {"id": wid, "workflow_name": wid, "metadata": "{}", "at_us": AT})


def register_marker(sock: zmq.Socket, name: str) -> str:
    """Register a fresh instance with one workflow; the writer applies it after all sent before."""
    token = secrets.token_hex(16)
    sock.send(codec.encode_message(name, 1, [hello(token), workflow(f"{name}-wf")], token))
    return f"{name}-wf"


def not_owner_letters(reader: Reader) -> list[tuple[Any, ...]]:
    return reader.query(
        "SELECT instance_id, seq, reason FROM dead_letters WHERE reason LIKE ?", (f"%{NOT_OWNER}%",)
    )


def test_a_forger_with_a_live_guis_id_and_next_seqs_costs_it_no_workflow(db, writers, clients):
    writers(db).wait_holding_lease()
    gui = clients(
        db, "--label", "gui", "--workflows", "200", "--tasks", "1", "--logs", "1", "--events", "0",
        "--wait-before-record",
    )  # fmt: skip
    instance_id = gui.read_event()["instance_id"]
    reader = Reader(db)
    wait_until(lambda: reader.get_instance(instance_id), 20, "the GUI's hello")
    gui.proceed()
    forged = 0
    with pushing(db) as sock:
        # The GUI's next sequence numbers, while it records: with another token and with none.
        for seq in range(2, 202):
            op = [workflow(f"forged-{seq}")]
            sock.send(codec.encode_message(instance_id, seq, op, secrets.token_hex(16)))
            sock.send(codec.encode_message(instance_id, seq, op))
            forged += 2
        sock.send(codec.encode_message(instance_id, 10**6, [("goodbye", {"at_us": AT})], "x" * 32))
        forged += 1
        marker = register_marker(sock, "forger-done")
        report = gui.finish(timeout=120)
        wait_until(lambda: reader.get_workflow(marker), 30, "the forger's messages to be read")
    assert report["flushed"] is True
    assert report["stats"]["rejected"] == 0
    mine = reader.get_workflows_for_instance(instance_id, limit=None)
    assert len(mine) == 200
    assert {w.workflow_name for w in mine} == {f"gui-wf-{n}" for n in range(200)}
    assert reader.query("SELECT COUNT(*) FROM workflow_executions WHERE id LIKE 'forged-%'") == [(0,)]
    letters = not_owner_letters(reader)
    assert len(letters) == forged
    # Not filed under the GUI's instance: its own rejections stay its own.
    assert all(row[0] is None for row in letters)
    assert any("carries no token" in row[2] for row in letters)
    assert any("token is not the one it registered with" in row[2] for row in letters)
    assert reader.get_rejections(instance_id) == []
    instance = reader.get_instance(instance_id)
    assert instance.rejected == 0
    assert instance.state == "ended"  # its own goodbye, not the forged one (seq 10**6)
    assert instance.last_seq < 10**6
    wait_until(
        lambda: reader.get_counters().get("writer.not_owner_messages_total") == forged, 10, "the counter"
    )


def test_a_forged_hello_with_a_dead_pid_neither_ends_a_live_gui_nor_abandons_its_workflow(
    db, writers, clients
):
    writers(db).wait_holding_lease()
    gui = clients(db, "--label", "victim", "--workflows", "1", "--leave-running")
    gui.read_event()
    recorded = gui.read_event()
    assert recorded["flushed"] is True
    instance_id, running = recorded["instance_id"], recorded["running_workflow"]
    reader = Reader(db)
    before = reader.get_instance(instance_id)
    with pushing(db) as sock:
        for token in (secrets.token_hex(16), None):
            for seq in (before.last_seq + 1, 1, 10**6):
                sock.send(codec.encode_message(instance_id, seq, [hello(token, NO_SUCH_PID)], token))
                sock.send(codec.encode_message(instance_id, seq, [("goodbye", {"at_us": AT})], token))
        # The same forged hello for an id nobody owns registers it; the sweep then finds its
        # pid gone. Sent after the forgeries on one connection: once it is dead, a sweep ran
        # after every forgery was applied or refused.
        control = "control-" + secrets.token_hex(4)
        token = secrets.token_hex(16)
        sock.send(codec.encode_message(control, 1, [hello(token, NO_SUCH_PID)], token))
        wait_until(
            lambda: (reader.get_instance(control) or before).state == "dead",
            30,
            "the sweep to judge the control",
        )
    assert len(not_owner_letters(reader)) == 12
    after = reader.get_instance(instance_id)
    assert after.state == "live"
    assert (after.pid, after.last_seq, after.rejected) == (before.pid, before.last_seq, 0)
    assert after.pid == gui.pid
    assert reader.get_workflow(running).status == "running"
    assert reader.get_workflow(running).error_message is None
    assert [i.id for i in reader.get_active_instances()] == [instance_id]
    gui.kill()


def test_messages_of_ten_thousand_new_instance_ids_make_no_rows_and_are_told_unknown(db, writers):
    writers(db).wait_holding_lease()
    reader = Reader(db)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(locations.endpoints_for(db).pub)
    sub.setsockopt(zmq.SUBSCRIBE, codec.NOTICE_COMMIT_PREFIX + b"stranger-")
    sent = 0
    with pushing(db) as sock:
        # A subscription reaches the publisher some time after connect: knock until told.
        def told() -> codec.Notice | None:
            nonlocal sent
            token = secrets.token_hex(16)
            sock.send(codec.encode_message("stranger-probe", 3, [workflow("probe")], token))
            sent += 1
            if sub.poll(100):
                return codec.decode_notice(sub.recv_multipart())
            return None

        notice = wait_until(told, 20, "a notice to the unknown instance")
        assert notice == codec.Notice("stranger-probe", notice.epoch, 0, True, 0, True)
        for n in range(10_000):
            token = secrets.token_hex(16) if n % 2 else None
            seq = 1 if n % 3 else 7
            sock.send(codec.encode_message(f"stranger-{n}", seq, [workflow(f"s-{n}")], token))
            sent += 1
        # Seq 1 that does not start with a hello registers nothing either.
        sock.send(codec.encode_message("stranger-late-hello", 1, [workflow("late"), hello(None)]))
        sent += 1
        marker = register_marker(sock, "after-strangers")
        wait_until(lambda: reader.get_workflow(marker), 120, "the strangers' messages to be read")
    sub.close()
    context.term()
    assert reader.query("SELECT id FROM instances") == [("after-strangers",)]
    assert reader.count_rows()["workflow_executions"] == 1
    assert reader.count_rows()["dead_letters"] == 0
    wait_until(
        lambda: reader.get_counters().get("writer.unknown_instance_messages_total") == sent,
        10,
        "the unknown-instance counter",
    )


def test_a_rogue_that_says_hello_first_gets_its_bad_operations_dead_lettered(db, writers):
    writers(db).wait_holding_lease()
    reader = Reader(db)
    token = secrets.token_hex(16)
    bad = (
        "create_task",
        {"id": "t", "workflow_id": "none", "task_name": "t", "execution_order": 1, "at_us": AT},
    )
    with pushing(db) as sock:
        sock.send(codec.encode_message("rogue", 1, [hello(token), bad, workflow("rogue-wf")], token))
        # A hello whose token is not the envelope's registers nothing: a dead letter.
        sock.send(codec.encode_message("rogue-2", 1, [hello("y" * 32), workflow("r2")], "z" * 32))
        # An older client: version 1, no token in its hello; its later messages need none.
        sock.send(codec.encode_message("old-client", 1, [hello(None), workflow("old-1")]))
        sock.send(codec.encode_message("old-client", 2, [workflow("old-2")]))
        sock.send(codec.encode_message("old-client", 3, [workflow("old-3")], "q" * 32))  # not its
        marker = register_marker(sock, "rogue-done")
        wait_until(lambda: reader.get_workflow(marker), 30, "the rogue's messages")
    assert reader.get_workflow("rogue-wf") is not None
    rogue = reader.get_instance("rogue")
    assert (rogue.last_seq, rogue.rejected) == (1, 1)
    assert "FOREIGN KEY" in reader.get_rejections("rogue")[0].reason
    assert reader.get_instance("rogue-2") is None and reader.get_workflow("r2") is None
    assert "token is not the message's" in reader.get_rejections("rogue-2")[0].reason
    assert reader.get_workflow("old-2") is not None and reader.get_workflow("old-3") is None
    assert reader.get_instance("old-client").last_seq == 2
    token_hashes = dict(reader.query("SELECT id, token_hash FROM instances"))
    assert token_hashes["rogue"] == codec.token_digest(token)
    assert token_hashes["old-client"] is None


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.005)


def test_garbage_of_16_mib_keeps_few_bytes_and_the_writers_memory_bounded(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    reader = Reader(db)
    size = codec.MAX_MESSAGE_BYTES
    peak = [psutil.Process(writer.pid).memory_info().rss]
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(writer.pid, stop, peak))
    sampler.start()
    try:
        with pushing(db) as sock:
            for n in range(24):
                # msgpack's unpacker reads one integer, then copies the rest into its error.
                sock.send(bytes([n]) + b"\x00" * (size - 1), copy=False)
            marker = register_marker(sock, "after-garbage")
            wait_until(lambda: reader.get_workflow(marker), 120, "the garbage to be read")
    finally:
        stop.set()
        sampler.join()
    rows = reader.query("SELECT length(raw), reason FROM dead_letters")
    assert len(rows) == 24
    kept = statements.DEAD_LETTER_RAW_KEPT_BYTES
    assert all(length == kept for length, _ in rows)
    assert all(reason.endswith(f"raw cut to {kept} of {size} bytes") for _, reason in rows)
    files = sum(path.stat().st_size for path in db.parent.glob(db.name + "*"))
    print(f"writer peak RSS {peak[0] / 2**20:.1f} MiB; database files {files / 2**20:.1f} MiB")
    assert files < 32 * 2**20  # it was 448 MiB, with the 384 MiB of garbage in it
    # Before: 350-415 MiB, and more with every message. Now 110-240 MiB here. What bounds it:
    # ZeroMQ's queue of RECEIVE_HIGH_WATER_MARK (16) messages of up to 16 MiB from this one
    # sender, plus the message being refused, copied thrice (ZeroMQ's, Python's bytes, the
    # unpacker's copy of its trailing bytes), plus the writer itself: about 335 MiB at most.
    assert peak[0] < 360 * 2**20


def test_dead_letters_are_capped_in_bytes_oldest_first_and_counted(db, writers):
    writers(
        db, "--dead-letters-kept-bytes", str(3 * statements.DEAD_LETTER_RAW_KEPT_BYTES)
    ).wait_holding_lease()
    reader = Reader(db)
    with pushing(db) as sock:
        for n in range(10):
            sock.send(b"\xc1%d" % n + b"\x00" * 100_000)
        marker = register_marker(sock, "after-bytes")
        wait_until(lambda: reader.get_workflow(marker), 30, "the garbage")
    kept = [bytes(r[0])[:2] for r in reader.query("SELECT raw FROM dead_letters ORDER BY id")]
    assert kept == [b"\xc17", b"\xc18", b"\xc19"]
    assert reader.query("SELECT SUM(length(raw)) FROM dead_letters") == [
        (3 * statements.DEAD_LETTER_RAW_KEPT_BYTES,)
    ]
    assert reader.get_counters()["dead_letters_dropped"] == 7


def _iso(seconds_ago: float) -> str:
    return timestamps.format_us(time.time_ns() // 1000 - int(seconds_ago * 1_000_000))


def test_instances_ended_or_dead_long_ago_are_deleted_while_live_and_recent_ones_stay(db, writers):
    first = writers(db)
    first.wait_holding_lease()
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    me = leases.current_process()
    long_ago, recently = _iso(40 * 86_400), _iso(86_400)
    rows = [
        # (id, pid, host, state, ended_at, last_seen)
        *[(f"old-ended-{n}", 1, me.host, "ended", long_ago, long_ago) for n in range(1_200)],
        ("old-dead", 1, me.host, "dead", long_ago, long_ago),
        ("unregistered", None, None, "live", None, long_ago),  # an older writer made it, hello-less
        ("recently-ended", 1, me.host, "ended", recently, recently),
        ("ended-with-its-clock-far-back", 1, me.host, "ended", long_ago, recently),
        ("live-since-long-ago", me.pid, me.host, "live", None, long_ago),
    ]
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO instances (id, pid, process_create_time, host, started_at, last_seen,"
            " ended_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (i, pid, me.create_time, host, long_ago, seen, ended, state)
                for i, pid, host, state, ended, seen in rows
            ],
        )
        conn.execute(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata, instance_id)"
            " VALUES ('kept-wf', 'kept', 'completed', ?, '{}', 'old-dead')",
            (long_ago,),
        )
    conn.close()
    writer = writers(db)
    writer.wait_holding_lease()
    reader = Reader(db)
    kept = {"recently-ended", "ended-with-its-clock-far-back", "live-since-long-ago"}
    wait_until(lambda: {i.id for i in reader.get_instances()} == kept, 30, "the old rows to go")
    assert reader.get_instance("live-since-long-ago").state == "live"
    assert reader.get_workflow("kept-wf").instance_id == "old-dead"  # records outlive their instance
    wait_until(
        lambda: reader.get_counters().get("writer.instances_deleted_total") == 1_202, 10, "the counter"
    )
    assert "deleted 500 instance rows" in writer.log()
    # A late message of a deleted instance is one of an unknown instance: nothing comes back.
    with pushing(db) as sock:
        sock.send(codec.encode_message("old-dead", 9, [workflow("late")]))
        marker = register_marker(sock, "after-late")
        wait_until(lambda: reader.get_workflow(marker), 30, "the late message")
    assert reader.get_instance("old-dead") is None and reader.get_workflow("late") is None


@pytest.mark.parametrize("days", ["0", "-1", "nan", "x"])
def test_the_writer_refuses_a_retention_that_is_not_a_positive_number_of_days(db, writers, days):
    writer = writers(db, "--instances-kept-days", days)
    assert writer.wait_exit() == 2
    assert "--instances-kept-days" in writer.log()


def test_a_version_1_hello_for_an_instance_with_a_token_is_refused(db, writers):
    """msgpack by hand, as a client older than tokens would send it."""
    writers(db).wait_holding_lease()
    reader = Reader(db)
    token = secrets.token_hex(16)
    with pushing(db) as sock:
        sock.send(codec.encode_message("owned", 1, [hello(token)], token))
        name, payload = hello(None, NO_SUCH_PID)
        sock.send(msgpack.packb([1, "owned", 2, [[name, payload]]]))
        marker = register_marker(sock, "after-v1")
        wait_until(lambda: reader.get_workflow(marker), 30, "the messages")
    assert reader.get_instance("owned").pid == os.getpid()
    assert reader.get_instance("owned").last_seq == 1
    assert "carries no token" in not_owner_letters(reader)[0][2]
