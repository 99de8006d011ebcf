"""What the writer tells the change feed about a batch: read from the prepared steps, no SQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import hello_op

from see_persistence import Client
from see_persistence.protocol import codec
from see_persistence.protocol.feed import Flag, Kind
from see_persistence.writer.batch import SequenceBook, prepare_messages
from see_persistence.writer.feed import describe_batch
from see_persistence.writer.storage import open_write_connection, upgrade_schema

pytestmark = pytest.mark.unit


def _operations(db: Path, record: Any) -> tuple[str, list[tuple[str, Any]]]:
    """The operations a Client makes for `record(client)`, taken from it unsent (no writer runs)."""
    client = Client(db)
    taken: list[tuple[str, Any]] = []
    client._put = lambda name, payload: taken.append((name, payload))  # type: ignore[method-assign]
    record(client)
    instance_id = client.instance_id
    client.close(timeout=0)
    return instance_id, [hello_op(), *taken]


def _describe(tmp_path: Path, record: Any) -> Any:
    db = tmp_path / "w.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, time.time_ns() // 1000)
    instance_id, ops = _operations(db, record)
    raw = codec.encode_message(instance_id, 1, ops)
    prepared = prepare_messages(conn, [raw], SequenceBook(), now_us=time.time_ns() // 1000)
    return instance_id, describe_batch(prepared, {}).notice(1, 2, 3)


def test_a_batch_is_described_per_record_with_workflows_and_last_statuses(tmp_path: Path) -> None:
    made: dict[str, str] = {}

    def record(client: Client) -> None:
        made["w"] = wid = client.create_workflow("w")
        client.update_workflow_status(wid, "running")
        made["t"] = tid = client.create_task(wid, "t", execution_order=1)
        client.update_task_status(tid, "running")
        client.append_task_log(tid, "a line")
        client.update_task_status(tid, "completed")
        client.log_audit_event("step", "e", workflow_id=wid)

    instance_id, notice = _describe(tmp_path, record)
    wid, tid = made["w"], made["t"]
    assert notice.flags == Flag.NONE
    by_key = {(r.kind, r.id): r for r in notice.records}
    assert by_key[(Kind.WORKFLOW, wid)].status == "running"
    assert by_key[(Kind.TASK, tid)].status == "completed"
    assert by_key[(Kind.TASK, tid)].workflow_id == wid
    assert by_key[(Kind.TASK_LOG, tid)].workflow_id == wid  # learned from its create_task
    assert (Kind.INSTANCE, instance_id) in by_key
    assert next(r for r in notice.records if r.kind == Kind.AUDIT_EVENT).workflow_id == wid


def test_a_large_batch_is_one_overflowing_notice_naming_its_workflows(tmp_path: Path) -> None:
    made: list[str] = []

    def record(client: Client) -> None:
        for n in range(3):
            wid = client.create_workflow(f"w{n}")
            made.append(wid)
            for _ in range(40):
                client.log_audit_event("step", "e", workflow_id=wid)

    _, notice = _describe(tmp_path, record)
    assert notice.flags & Flag.OVERFLOW and notice.records == ()
    assert notice.count == 3 + 120 + 1
    assert notice.workflow_ids is None or set(made) <= set(notice.workflow_ids)
