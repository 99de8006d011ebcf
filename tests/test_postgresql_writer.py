"""The writer on PostgreSQL: real writer processes, a real server, raw ZeroMQ senders with CURVE.

Every writer here runs `see-persistence writer --db postgresql://...` on the session's server
(tests/conftest_postgres.py), listening on `tcp://127.0.0.1:0`; the test reads where from the
lease row, as a client would, and checks what was committed through psycopg.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import WriterProcess, wait_until

from see_persistence import leases
from see_persistence.keys import KeyStore
from see_persistence.protocol import schema

psycopg = pytest.importorskip("psycopg")

LISTEN = ("--listen", "tcp://127.0.0.1:0")
EXIT_LEASE_HELD, EXIT_LEASE_LOST = 3, 4
AT_US = 1_700_000_000_000_000


@pytest.fixture
def tcp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A key directory of this test's own, for the writers it starts and for its own senders."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(tmp_path / "keys"))
    return dict(os.environ)


@pytest.fixture
def pg_writers(tmp_path: Path, tcp_env: dict[str, str]) -> Iterator[Any]:
    """Start `see-persistence writer --db URL` processes; all are killed at teardown."""
    started: list[WriterProcess] = []

    def start(url: str, *extra: str) -> WriterProcess:
        writer = WriterProcess(url, tmp_path / f"writer-{len(started)}.log", *LISTEN, *extra, env=tcp_env)  # type: ignore[arg-type]
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.stop()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    """A context whose sockets the test closes with a bounded linger."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` on a connection of its own (autocommit: nothing held between calls)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def lease(url: str) -> dict[str, Any] | None:
    """The writer_lease row, or None (also before the schema exists)."""
    try:
        rows = query(
            url, "SELECT pid, epoch, endpoints, public_key, released_at FROM writer_lease WHERE id = 1"
        )
    except psycopg.errors.UndefinedTable:
        return None
    if not rows:
        return None
    pid, epoch, endpoints, public_key, released_at = rows[0]
    return {
        "pid": pid,
        "epoch": epoch,
        "endpoints": json.loads(endpoints) if endpoints else None,
        "public_key": public_key,
        "released_at": released_at,
    }


def wait_serving(url: str, writer: WriterProcess, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until `writer` holds the lease and has recorded its endpoints; return the row."""

    def serving() -> dict[str, Any] | None:
        if writer.process.poll() is not None:
            raise AssertionError(f"writer exited with {writer.process.returncode}:\n{writer.log()}")
        row = lease(url)
        if row and row["pid"] == writer.pid and row["endpoints"] and row["released_at"] is None:
            return row
        return None

    return wait_until(serving, timeout, f"writer pid {writer.pid} to serve")  # type: ignore[no-any-return]


def connect_curve(context: zmq.Context[Any], kind: int, row: dict[str, Any], which: int) -> zmq.Socket[Any]:
    """A socket of `kind` connected with CURVE to endpoint `which` (0: PULL, 1: PUB) the lease names."""
    mine = KeyStore().client_pair()  # allowed when made: the same user on the same machine
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.CURVE_SERVERKEY, row["public_key"].encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, mine.public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, mine.secret.encode())
    sock.connect(row["endpoints"][0][which])
    return sock


class Sender:
    """One made-up GUI instance sending version 2 messages: a hello first, then seq 2, 3, ..."""

    def __init__(self) -> None:
        self.instance_id = str(uuid.uuid4())
        self.token = uuid.uuid4().hex

    def message(self, seq: int, *ops: tuple[str, dict[str, Any]]) -> bytes:
        """The message `seq` carrying `ops` (a hello before them when seq is 1)."""
        operations = [list(op) for op in ops]
        if seq == 1:
            me = leases.current_process()
            hello = {
                "pid": me.pid,
                "process_create_time": me.create_time,
                "host": me.host,
                "token": self.token,
                "at_us": AT_US,
            }
            operations.insert(0, ["hello", hello])
        return msgpack.packb([2, self.instance_id, seq, self.token, operations])  # type: ignore[no-any-return]


def create_workflow(wid: str, metadata: str = "{}") -> tuple[str, dict[str, Any]]:
    fields = {"id": wid, "workflow_name": f"wf {wid}", "metadata": metadata, "at_us": AT_US}
    return ("create_workflow", fields)


def status_fields(record_id: str, status: str, at_us: int) -> dict[str, Any]:
    return {"id": record_id, "status": status, "error_message": None, "at_us": at_us}


def workflow_status(wid: str, status: str, at_us: int) -> tuple[str, dict[str, Any]]:
    return ("update_workflow_status", status_fields(wid, status, at_us))


def audit_event(eid: str, wid: str, data: str) -> tuple[str, dict[str, Any]]:
    fields = {"id": eid, "event_type": "workflow_completed", "message": "done", "workflow_id": wid}
    return ("audit_event", {**fields, "task_id": None, "data": data, "at_us": AT_US + 6})


def create_task(tid: str, wid: str) -> tuple[str, dict[str, Any]]:
    return (
        "create_task",
        {"id": tid, "workflow_id": wid, "task_name": "compile", "execution_order": 1, "at_us": AT_US},
    )


def append_log(tid: str, line: str) -> tuple[str, dict[str, Any]]:
    return ("append_task_log", {"id": tid, "line": line, "at_us": AT_US})


def cut_session_of(url: str, writer: WriterProcess) -> None:
    """End the server session of `writer` (as a server restart or a network cut would)."""
    ended = query(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND datname = current_database()",
        (f"see-persistence writer pid {writer.pid}",),
    )
    assert ended == [(True,)]


def last_seq(url: str, instance_id: str) -> int:
    rows = query(url, "SELECT last_seq FROM instances WHERE id = %s", (instance_id,))
    return int(rows[0][0]) if rows else 0


def test_u0000_is_found_in_text_and_in_json_but_an_escaped_backslash_is_not_it() -> None:
    from see_persistence.writer import pg_batch  # psycopg loads libpq through a subprocess: no unit test

    assert pg_batch.holds_nul(("a\x00b", 1, None), ())
    assert pg_batch.holds_nul(("w", '{"a": "\\u0000"}'), (1,))
    assert pg_batch.holds_nul(("w", '{"\\u0000": 1}'), (1,))
    assert not pg_batch.holds_nul(("w", '{"a": "\\\\u0000"}'), (1,))  # the text backslash-u0000
    assert not pg_batch.holds_nul(("literally \\u0000", "{}"), (1,))  # not a JSON parameter


# -- one writer ------------------------------------------------------------------------------------


def test_a_writer_on_postgresql_commits_what_a_curve_push_sends(postgres_url, pg_writers, zmq_context):
    writer = pg_writers(postgres_url)
    row = wait_serving(postgres_url, writer)
    assert row["public_key"] == KeyStore().writer_pair().public
    assert all(pull.startswith("tcp://127.0.0.1:") for pull, _pub in row["endpoints"])
    assert query(postgres_url, "SELECT MAX(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    sender = Sender()
    sub = connect_curve(zmq_context, zmq.SUB, row, 1)
    sub.setsockopt(zmq.SUBSCRIBE, b"c" + sender.instance_id.encode())
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    wid, tid = "w-1", "t-1"
    push.send(sender.message(1, create_workflow(wid, '{"branch": "main", "n": 1}'), create_task(tid, wid)))
    push.send(
        sender.message(
            2,
            workflow_status(wid, "running", AT_US),
            append_log(tid, "gcc -O2"),
            append_log(tid, "ok"),
            ("update_task_status", {**status_fields(tid, "completed", AT_US + 5), "output": "done"}),
            audit_event("e-1", wid, '{"k": [1, 2]}'),
            workflow_status(wid, "completed", AT_US + 7),
        )
    )
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 2, 20, "both messages committed")
    status, success, started, completed, metadata = query(
        postgres_url,
        "SELECT status, success, started_at, completed_at, metadata FROM workflow_executions WHERE id = %s",
        (wid,),
    )[0]
    assert (status, success, metadata) == ("completed", True, {"branch": "main", "n": 1})
    assert started <= completed
    assert query(postgres_url, "SELECT status, output, logs FROM task_executions WHERE id = %s", (tid,)) == [
        ("completed", "done", ["gcc -O2", "ok"])
    ]
    assert query(postgres_url, "SELECT data FROM audit_events") == [({"k": [1, 2]},)]
    assert query(postgres_url, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    # The commit notice a client's flush() waits for, over CURVE too.
    assert sub.poll(20_000), "no commit notice"
    topic, payload = sub.recv_multipart()
    assert topic == b"c" + sender.instance_id.encode()
    assert msgpack.unpackb(payload)[:2] == [row["epoch"], msgpack.unpackb(payload)[1]]


def test_resent_messages_are_applied_once(postgres_url, pg_writers, zmq_context):
    writer = pg_writers(postgres_url)
    push = connect_curve(zmq_context, zmq.PUSH, wait_serving(postgres_url, writer), 0)
    sender = Sender()
    first = sender.message(1, create_workflow("w"), create_task("t", "w"))
    second = sender.message(2, append_log("t", "once"))
    for raw in (first, second, second, first, second):
        push.send(raw)
    third = sender.message(3, append_log("t", "twice? no"))
    push.send(third)
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 3, 20, "the third message")
    assert query(postgres_url, "SELECT logs FROM task_executions") == [(["once", "twice? no"],)]
    assert query(postgres_url, "SELECT COUNT(*) FROM workflow_executions") == [(1,)]
    assert query(postgres_url, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_bad_input_is_dead_letters_with_reasons_and_the_rest_commits(postgres_url, pg_writers, zmq_context):
    writer = pg_writers(postgres_url)
    push = connect_curve(zmq_context, zmq.PUSH, wait_serving(postgres_url, writer), 0)
    sender = Sender()
    push.send(b"\xc1\xc1\xc1")
    push.send(
        sender.message(
            1,
            create_workflow("w-good"),
            create_workflow("w-nul-name\x00"),
            create_workflow("w-nul-json", '{"a": "b\\u0000c"}'),
            create_workflow("w-escaped", '{"a": "\\\\u0000 is fine"}'),
            ("drop_tables", {}),
            create_task("t-orphan", "no-such-workflow"),
            append_log("t-none", "nobody's"),
            append_log("t-none-either", "nul \x00 inside"),
        )
    )
    push.send(sender.message(2, create_workflow("w-marker")))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 2, 20, "the marker behind the bad input")
    assert sorted(r[0] for r in query(postgres_url, "SELECT id FROM workflow_executions")) == [
        "w-escaped",
        "w-good",
        "w-marker",
    ]
    reasons = [r[0] for r in query(postgres_url, "SELECT reason FROM dead_letters ORDER BY id")]
    assert len(reasons) == 7, reasons
    assert any("not msgpack" in r for r in reasons)
    assert sum("U+0000" in r for r in reasons) == 3  # the name, the JSON, the log line
    assert any("unknown operation 'drop_tables'" in r for r in reasons)
    assert any(r.startswith("create_task:") and "foreign key" in r for r in reasons)
    assert any("no record with id 't-none'" in r for r in reasons)
    rejected = query(postgres_url, "SELECT rejected FROM instances WHERE id = %s", (sender.instance_id,))
    assert rejected == [(6,)]
    assert writer.process.poll() is None


# -- the lease ---------------------------------------------------------------------------------------


def test_two_writers_started_at_once_create_the_schema_once_and_one_serves(postgres_url, pg_writers):
    first, second = pg_writers(postgres_url), pg_writers(postgres_url)
    holder = wait_until(lambda: (row := lease(postgres_url)) and row["endpoints"] and row, 30, "a holder")
    other = second if holder["pid"] == first.pid else first
    assert other.wait_exit(30) == EXIT_LEASE_HELD, other.log()
    assert "another writer holds the lease" in other.log()
    assert query(postgres_url, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]


def test_a_standby_takes_over_after_sigkill_nothing_lost_or_doubled(postgres_url, pg_writers, zmq_context):
    first = pg_writers(postgres_url)
    row = wait_serving(postgres_url, first)
    standby = pg_writers(postgres_url, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    assert lease(postgres_url)["pid"] == first.pid  # exactly one writes
    cut_session_of(postgres_url, standby)  # a standby connects again and goes on waiting
    wait_until(lambda: "connecting again" in standby.log(), 30, "the standby to see its session end")
    sender = Sender()
    count = 200
    messages = [sender.message(1, create_workflow("w"), create_task("t", "w"))]
    messages += [sender.message(seq, append_log("t", f"line {seq}")) for seq in range(2, count + 1)]
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    for raw in messages[: count // 2]:
        push.send(raw)
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) > 10, 20, "the first commits")
    first.signal(signal.SIGKILL)
    assert first.wait_exit() == -signal.SIGKILL
    taken = wait_serving(postgres_url, standby)
    assert taken["epoch"] == row["epoch"] + 1
    assert taken["endpoints"] != row["endpoints"]
    # A client resends everything it holds unconfirmed: here, all of it.
    push.close()
    push = connect_curve(zmq_context, zmq.PUSH, taken, 0)
    for raw in messages:
        push.send(raw)
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == count, 30, "every message")
    logs = query(postgres_url, "SELECT logs FROM task_executions WHERE id = 't'")[0][0]
    assert logs == [f"line {seq}" for seq in range(2, count + 1)]
    assert query(postgres_url, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_a_fenced_writer_commits_nothing_and_exits_4(postgres_url, pg_writers, zmq_context):
    writer = pg_writers(postgres_url)
    row = wait_serving(postgres_url, writer)
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    sender = Sender()
    push.send(sender.message(1, create_workflow("before")))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 1, 20, "the first message")
    # Another writer's takeover as the row shows it: the epoch moved on under this one.
    query(postgres_url, "UPDATE writer_lease SET epoch = epoch + 1 RETURNING epoch")
    push.send(sender.message(2, create_workflow("after")))
    assert writer.wait_exit(30) == EXIT_LEASE_LOST, writer.log()
    assert "lost the writer lease" in writer.log()
    assert query(postgres_url, "SELECT id FROM workflow_executions") == [("before",)]
    assert last_seq(postgres_url, sender.instance_id) == 1


def test_a_writer_whose_connection_is_cut_takes_the_lock_again(postgres_url, pg_writers, zmq_context):
    writer = pg_writers(postgres_url)
    row = wait_serving(postgres_url, writer)
    cut_session_of(postgres_url, writer)
    wait_until(lambda: "holding the lease again" in writer.log(), 30, "the writer to reconnect")
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    sender = Sender()
    push.send(sender.message(1, create_workflow("after-the-cut")))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 1, 20, "a commit after the cut")
    assert lease(postgres_url)["epoch"] == row["epoch"]
    assert writer.process.poll() is None


def test_a_long_run_of_inserts_commits_and_one_bad_row_in_it_is_the_only_dead_letter(
    postgres_url, pg_writers, zmq_context
):
    writer = pg_writers(postgres_url)
    push = connect_curve(zmq_context, zmq.PUSH, wait_serving(postgres_url, writer), 0)
    sender = Sender()
    # Runs long enough for COPY (pg_batch.COPY_MIN_ROWS); the second repeats an id of the first.
    push.send(sender.message(1, *[create_workflow(f"w-{n}") for n in range(100)]))
    push.send(
        sender.message(2, *[create_workflow(f"w-{n}") for n in range(100, 150)], create_workflow("w-7"))
    )
    push.send(sender.message(3, *[create_task(f"t-{n}", f"w-{n}") for n in range(60)]))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 3, 20, "all three messages")
    assert query(postgres_url, "SELECT COUNT(*) FROM workflow_executions") == [(150,)]
    assert query(postgres_url, "SELECT COUNT(*), MIN(status), MAX(logs::text) FROM task_executions") == [
        (60, "pending", "[]")
    ]
    reasons = [r[0] for r in query(postgres_url, "SELECT reason FROM dead_letters")]
    assert len(reasons) == 1 and reasons[0].startswith("create_workflow:") and "duplicate key" in reasons[0]


def test_a_frozen_writer_s_session_is_ended_by_the_standby_which_takes_over(
    fast_lease, postgres_url, pg_writers, zmq_context
):
    first = pg_writers(postgres_url)
    row = wait_serving(postgres_url, first)
    standby = pg_writers(postgres_url, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    first.signal(signal.SIGSTOP)  # its session, and the lock, stay with the server
    taken = wait_serving(postgres_url, standby, timeout=60)
    assert taken["epoch"] == row["epoch"] + 1
    assert "has not renewed its heartbeat" in standby.log()
    first.signal(signal.SIGCONT)
    assert first.wait_exit(30) == EXIT_LEASE_LOST, first.log()
    push = connect_curve(zmq_context, zmq.PUSH, taken, 0)
    sender = Sender()
    push.send(sender.message(1, create_workflow("to-the-new-writer")))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 1, 20, "a commit by the new writer")


def test_a_server_restart_under_load_loses_nothing_and_doubles_nothing(
    postgres_server, postgres_url, pg_writers, zmq_context
):
    writer = pg_writers(postgres_url)
    row = wait_serving(postgres_url, writer)
    sender = Sender()
    count = 300
    messages = [sender.message(1, create_workflow("w"), create_task("t", "w"))]
    messages += [sender.message(seq, append_log("t", f"line {seq}")) for seq in range(2, count + 1)]
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    for raw in messages[: count // 2]:
        push.send(raw)
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) > 10, 20, "the first commits")
    postgres_server.restart()
    for raw in messages[count // 2 :]:
        push.send(raw)
    wait_until(lambda: "holding the lease again" in writer.log(), 60, "the writer to take the lock again")
    for raw in messages:  # what a client resends when confirmations stop: applied once
        push.send(raw)
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == count, 60, "every message")
    logs = query(postgres_url, "SELECT logs FROM task_executions WHERE id = 't'")[0][0]
    assert logs == [f"line {seq}" for seq in range(2, count + 1)]
    assert lease(postgres_url)["epoch"] == row["epoch"]  # nobody else took it: the same writer went on
    assert writer.process.poll() is None


def test_a_caller_clock_stepping_back_never_puts_completion_before_start(
    postgres_url, pg_writers, zmq_context
):
    writer = pg_writers(postgres_url)
    push = connect_curve(zmq_context, zmq.PUSH, wait_serving(postgres_url, writer), 0)
    sender = Sender()
    push.send(
        sender.message(
            1,
            create_workflow("w-back"),
            workflow_status("w-back", "running", AT_US + 10_000_000),
            workflow_status("w-back", "failed", AT_US + 5_000_000),  # the caller's clock stepped back 5 s
            create_workflow("w-late-start"),
            workflow_status("w-late-start", "completed", AT_US + 5_000_000),
            workflow_status("w-late-start", "running", AT_US + 9_000_000),  # a start reported after the end
        )
    )
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 1, 20, "the message")
    rows = dict(
        (wid, (started, completed, success))
        for wid, started, completed, success in query(
            postgres_url, "SELECT id, started_at, completed_at, success FROM workflow_executions"
        )
    )
    started, completed, success = rows["w-back"]
    assert started == completed and success is False
    started, completed, success = rows["w-late-start"]
    assert started == completed and success is True


def test_a_stopped_writer_commits_what_it_received_and_hands_the_lease_to_the_standby(
    postgres_url, pg_writers, zmq_context
):
    first = pg_writers(postgres_url)
    row = wait_serving(postgres_url, first)
    standby = pg_writers(postgres_url, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    push = connect_curve(zmq_context, zmq.PUSH, row, 0)
    sender = Sender()
    push.send(sender.message(1, create_workflow("w"), create_task("t", "w")))
    wait_until(lambda: last_seq(postgres_url, sender.instance_id) == 1, 20, "the first message")
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0, first.log()
    assert "released the writer lease (epoch 1)" in first.log()
    taken = wait_serving(postgres_url, standby)
    assert taken["epoch"] == 2 and "has not renewed its heartbeat" not in standby.log()


# -- with the real Client and Reader (reader/postgresql.py, the Client's discovery) ----------------


def test_clients_on_postgresql_commit_exact_counts_through_a_writer_killed_mid_stream(
    postgres_url, pg_writers, clients, tcp_env
):
    from see_persistence import Reader

    first = pg_writers(postgres_url)
    wait_serving(postgres_url, first)
    standby = pg_writers(postgres_url, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    args = ("--workflows", "150", "--tasks", "2", "--logs", "2", "--events", "1")
    procs = [clients(postgres_url, "--label", f"c{n}", *args, env=tcp_env) for n in range(2)]
    wait_until(
        lambda: query(postgres_url, "SELECT COUNT(*) FROM workflow_executions")[0][0] > 20,
        30,
        "first commits",
    )
    first.signal(signal.SIGKILL)
    first.wait_exit()
    wait_serving(postgres_url, standby)
    reports = [p.finish(timeout=90) for p in procs]
    assert all(r["flushed"] for r in reports), reports
    counts = query(
        postgres_url,
        "SELECT (SELECT COUNT(*) FROM workflow_executions), (SELECT COUNT(*) FROM task_executions),"
        " (SELECT COUNT(*) FROM audit_events), (SELECT COUNT(*) FROM dead_letters)",
    )
    assert counts == [(300, 600, 300, 0)]
    assert query(
        postgres_url, "SELECT COUNT(*) FROM task_executions WHERE jsonb_array_length(logs) != 2"
    ) == [(0,)]
    reader = Reader(postgres_url)
    try:
        for report in reports:
            tasks = reader.get_tasks_for_workflow(report["workflow_ids"][0])
            assert [t.execution_order for t in tasks] == [1, 2]
    finally:
        reader.close()
