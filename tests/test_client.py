"""The Client never waits for the writer: it buffers, drops and counts, or blocks if asked."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from conftest import wait_until

from see_persistence import CallerError, Client, ClientClosed, Reader, Status


def test_write_calls_return_with_no_writer_and_drop_past_the_buffer(db):
    client = Client(db, buffer_limit=1000)
    ids = [client.create_workflow(f"w{n}") for n in range(1500)]
    assert len(set(ids)) == 1500
    stats = client.stats
    assert stats.accepted == 999  # the limit holds the instance's own hello too
    assert stats.dropped == 501
    assert stats.buffered == 999
    assert client.flush(timeout=0.2) is False
    assert client.close(timeout=0.2) is False
    assert not db.exists()  # the client never writes the file itself


def test_a_caller_that_chose_to_block_waits_for_room_until_a_writer_takes_over(db, writers):
    client = Client(db, buffer_limit=20, block_when_full=True)
    done = threading.Event()

    def record() -> None:
        for n in range(100):
            client.create_workflow(f"w{n}")
        done.set()

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    assert not done.wait(0.5)  # blocked: 20 held, no writer
    writers(db).wait_holding_lease()
    assert done.wait(30)
    assert client.flush(timeout=30)
    assert client.stats.dropped == 0
    assert Reader(db).count_rows()["workflow_executions"] == 100
    client.close()


def test_caller_mistakes_raise_at_once_with_a_clear_message(db):
    with Client(db) as client:
        with pytest.raises(CallerError, match="name must not be empty"):
            client.create_workflow("   ")
        with pytest.raises(CallerError, match="unknown status 'done'"):
            client.update_workflow_status("some-id", "done")
        with pytest.raises(CallerError, match="metadata is not JSON"):
            client.create_workflow("w", metadata={"when": object()})
        with pytest.raises(CallerError, match="metadata must be a dict"):
            client.create_workflow("w", metadata=["a"])  # type: ignore[arg-type]
        with pytest.raises(CallerError, match="execution_order must be an integer"):
            client.create_task("wid", "t", execution_order="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not valid Unicode"):
            client.append_task_log("tid", "bad \udc80 surrogate")
        assert client.stats.accepted == 0  # nothing invalid was queued
        client.close(timeout=0.1)
        with pytest.raises(ClientClosed):
            client.create_workflow("after close")


def test_context_managers_complete_or_fail_with_the_error(db, writers):
    writers(db).wait_holding_lease()
    with Client(db) as client:
        with client.workflow("deploy", metadata={"env": "prod"}) as run:
            with run.task("upload") as task:
                task.log("sent 3 files")
            run.event("note", "uploaded", task_id=task.id, data={"files": 3})
        with pytest.raises(RuntimeError), client.workflow("broken") as broken, broken.task("explode"):
            raise RuntimeError("boom")
        assert client.flush(timeout=20)
    reader = Reader(db)
    done = reader.get_workflow(run.id)
    assert done.status == Status.COMPLETED and done.success is True and done.metadata == {"env": "prod"}
    [upload] = reader.get_tasks_for_workflow(run.id)
    assert upload.logs == ["sent 3 files"] and upload.status == "completed" and upload.execution_order == 1
    trail = reader.get_audit_trail(run.id)
    assert [e.event_type for e in trail] == [
        "workflow_started",
        "task_started",
        "task_completed",
        "note",
        "workflow_completed",
    ]
    assert trail[3].data == {"files": 3} and trail[1].task_id == upload.id == trail[2].task_id
    failed = reader.get_workflow(broken.id)
    assert failed.status == Status.FAILED and failed.success is False
    assert failed.error_message == "RuntimeError: boom"
    assert reader.get_tasks_for_workflow(broken.id)[0].error_message == "RuntimeError: boom"
    broken_trail = reader.get_audit_trail(broken.id)
    assert [e.event_type for e in broken_trail] == [
        "workflow_started",
        "task_started",
        "task_failed",
        "workflow_failed",
    ]
    assert broken_trail[-1].message == "workflow broken failed: RuntimeError: boom"


def test_several_threads_share_one_client(db, writers):
    writers(db).wait_holding_lease()
    client = Client(db)

    def record(label: str) -> None:
        for n in range(200):
            client.log_audit_event("tick", f"{label}-{n}")

    threads = [threading.Thread(target=record, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert client.flush(timeout=30)
    messages = {row[0] for row in Reader(db).query("SELECT message FROM audit_events")}
    assert messages == {f"t{i}-{n}" for i in range(4) for n in range(200)}
    client.close()


def test_flush_returns_true_only_once_a_reader_sees_everything(db, writers):
    client = Client(db)
    wid = client.create_workflow("visible")
    writers(db).wait_holding_lease()
    assert client.flush(timeout=20) is True
    assert Reader(db).get_workflow(wid) is not None
    wait_until(lambda: client.stats.writer_epoch == 1, 10, "the client to hear the writer's epoch")
    client.close()


def test_a_client_never_closed_still_delivers_large_messages_at_exit(db, writers):
    # The interpreter's exit closes a forgotten Client. Messages of more than 64 KiB used to
    # go out by zero-copy, which pyzmq refuses during shutdown: the sender died, the rows were lost.
    writers(db).wait_holding_lease()
    script = (
        "import sys\n"
        "from see_persistence import Client\n"
        "client = Client(sys.argv[1])\n"
        "for n in range(4000):\n"
        "    client.log_audit_event('exit', f'{n:05d}' + 'x' * 400)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    rows = Reader(db).query("SELECT COUNT(*) FROM audit_events WHERE event_type = 'exit'")
    assert rows == [(4000,)]


def test_prune_takes_the_command_lines_ages_and_refuses_others_as_a_callers_mistake(db):
    with Client(db) as client:
        for age in ("30d", "12h", "90m", "3600s", "2w", 3600, 1.5, timedelta(days=1)):
            client.prune(age)
        for bad in ("soon", "-3d", -1, float("nan"), True, None):
            with pytest.raises(CallerError, match="older_than"):
                client.prune(bad)  # type: ignore[arg-type]
        assert client.stats.accepted == 8
        client.close(timeout=0.1)


def test_json_the_rust_core_would_read_differently_is_refused_in_the_caller(db):
    with Client(db) as client:
        with pytest.raises(CallerError, match=r"metadata has a key 1 of type int"):
            client.create_workflow("w", metadata={1: "a"})
        with pytest.raises(CallerError, match=r'data\["n"\]\["huge"\] is 1180591620717411303425, outside'):
            client.log_audit_event("e", "m", data={"n": {"huge": 2**70 + 1}})
        client.create_workflow("w", metadata={"max": 2**64 - 1, "min": -(2**63), "12": "a string key"})
        assert client.stats.accepted == 1
        client.close(timeout=0.1)
