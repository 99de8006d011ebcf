"""No message is retried forever: one that cannot be applied becomes a dead letter with its
reason, and the messages around it commit (issue 13)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import wait_until

from see_persistence import Client, Reader, Writer
from see_persistence.protocol import binding
from see_persistence.writer import batch


def test_an_operation_another_programs_schema_refuses_is_a_dead_letter_not_a_stuck_batch(db, writers):
    # Another program's trigger fails one insert with SQLITE_ERROR (not a constraint): the
    # batch used to fail at every retry, holding back everything after it.
    writers(db).wait_holding_lease()
    other_program = sqlite3.connect(db, isolation_level=None)
    other_program.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.message = 'poison'"
        " BEGIN SELECT json('this is not JSON'); END"
    )
    other_program.close()
    with Client(db) as client:
        before = client.log_audit_event("note", "before")
        client.log_audit_event("note", "poison")
        after = client.log_audit_event("note", "after")
        assert client.flush(timeout=30) is False  # settled, with one refusal
        [rejection] = client.rejections()
        assert rejection.operation == "audit_event" and "malformed JSON" in rejection.reason
        wid = client.create_workflow("later")
        assert client.flush(timeout=30) is True
    reader = Reader(db)
    assert reader.get_audit_event(before) is not None and reader.get_audit_event(after) is not None
    assert reader.get_workflow(wid) is not None
    assert reader.query("SELECT COUNT(*) FROM audit_events WHERE message = 'poison'") == [(0,)]


@contextmanager
def _in_process_writer(db: Path) -> Iterator[Writer]:
    """A Writer on a thread of the test process (so that monkeypatches reach it), stopped after."""
    writer = Writer(db)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        assert writer.wait_ready(20)
        yield writer
    finally:
        writer.stop()
        thread.join(timeout=20)


def _fail_runs_holding_the_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = batch._Applier.run

    def crashing_run(self, step):  # type: ignore[no-untyped-def]
        if any(op.payload.get("workflow_name") == "poison" for op in step.operations):
            raise RuntimeError("a fault outside any one operation")
        return real_run(self, step)

    monkeypatch.setattr(batch._Applier, "run", crashing_run)


def test_an_operation_the_writers_code_fails_on_is_a_dead_letter_and_its_neighbours_commit(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault of the writer's own code that one operation's contents trigger (here forced):
    # that operation is refused with the reason; the others of its message still apply.
    real = binding.FAST_BINDS["create_workflow"]

    def crashing(payload, instance_id, now):  # type: ignore[no-untyped-def]
        if isinstance(payload, dict) and payload.get("workflow_name") == "poison":
            raise RuntimeError("a fault of the writer's own code")
        return real(payload, instance_id, now)

    monkeypatch.setitem(binding.FAST_BINDS, "create_workflow", crashing)
    with _in_process_writer(db):
        with Client(db) as client:
            good = [client.create_workflow(f"good-{n}") for n in range(50)]
            client.create_workflow("poison")
            good += [client.create_workflow(f"good-{n}") for n in range(50, 100)]
            assert client.flush(timeout=30) is False
            [rejection] = client.rejections()
            assert rejection.operation == "create_workflow"
            assert "the writer failed applying it: RuntimeError" in rejection.reason
        reader = Reader(db)
        assert all(reader.get_workflow(wid) is not None for wid in good)


def test_a_message_the_writer_fails_on_every_time_is_buried_and_the_rest_commits(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last resort, for a fault outside any one operation (here forced in running a batch):
    # tried a few times, then committed in halves down to the message at fault, which becomes
    # a dead letter; its instance's sequence moves past it, so what follows still applies.
    _fail_runs_holding_the_poison(monkeypatch)
    with _in_process_writer(db) as writer:
        with Client(db) as client:
            first = client.create_workflow("first")
            assert client.flush(timeout=30) is True
            client.create_workflow("poison")
            assert client.flush(timeout=60) is False
            [rejection] = client.rejections()
            assert rejection.operation is None  # the whole message
            assert "failed 3 times applying it: RuntimeError" in rejection.reason
            later = client.create_workflow("later")
            assert client.flush(timeout=30) is True
        wait_until(lambda: writer.counters.get("messages_buried") == 1, 10, "the writer to count the burial")
        reader = Reader(db)
        assert reader.get_workflow(first) is not None and reader.get_workflow(later) is not None
        poisoned = reader.query("SELECT COUNT(*) FROM workflow_executions WHERE workflow_name = 'poison'")
        assert poisoned == [(0,)]


def test_a_registering_message_that_is_buried_still_registers_its_instance(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Buried with its hello, the instance would stay unknown and its client would send the
    # same message for ever: the hello is applied alone.
    _fail_runs_holding_the_poison(monkeypatch)
    with _in_process_writer(db) as writer:
        with Client(db) as client:
            client.create_workflow("poison")  # travels with the client's hello
            assert client.flush(timeout=60) is False
            later = client.create_workflow("later")
            assert client.flush(timeout=30) is True
            instance = Reader(db).get_instance(client.instance_id)
            assert instance is not None and instance.rejected == 1
        assert Reader(db).get_workflow(later) is not None
        assert writer.counters.get("messages_buried") == 1
