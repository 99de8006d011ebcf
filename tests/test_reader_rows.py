"""The Reader's quick row path: the same models as the validated path, for every row shape."""

from __future__ import annotations

import copy
import json
import pickle
import sqlite3
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from see_persistence import Reader, WorkflowExecution
from see_persistence.protocol import schema
from see_persistence.protocol.errors import CallerError
from see_persistence.reader import audit, rows, tasks, workflows

pytestmark = pytest.mark.unit

WRITER_AT = "2026-12-01T07:37:36.123456+00:00"  # the writer's form: the quick path takes it
TIMESTAMPS = [
    WRITER_AT,
    "2026-12-01T07:37:36.000000+00:00",
    "2026-12-01T07:37:36.123456789+00:00",  # chrono's to_rfc3339: nine digits
    "2026-12-01T07:37:36.1234567+00:00",
    "2026-12-01T07:37:36.9999999Z",
    "2026-12-01T07:37:36Z",
    "2026-12-01T07:37:36.123456Z",
    "2026-12-01T07:37:36.123456-00:00",
    "2026-12-01T07:37:36.123456+02:00",  # same length as the writer's form, another offset
    "2026-12-01T08:37:36.123456+0100",
    "2026-12-01 07:37:36",  # SQLite's CURRENT_TIMESTAMP default: naive, UTC
    "2026-12-01 07:37:36.123456+00:00",  # a space, but otherwise the writer's form
    "2026-12-01T07:37:36.123456",  # naive, writer-like
    "2026-12-01T07:37:36.12345600000",  # 32 characters, naive
    "2026-12-01",
    "not a time",
    "",
    1796110656,  # a number where text belongs (NUMERIC affinity keeps it one)
    b"2026-12-01T07:37:36.123456+00:00",
]
JSON_OBJECTS = [
    None,
    "{}",
    "",
    '{"branch": "main", "n": 1}',
    '{"a": [1, 2], "b": {"c": null}}',
    ' {"a": 1}',  # whitespace around the value: decode() allows it, the scanner does not
    '{"a": 1} ',
    '{"a": NaN}',
    "[1]",
    '["a", 1, null]',
    "3",
    "-1.5e3",
    "true",
    '"text"',
    "null",
    "{not json",
    '{"a": 1} {"b": 2}',
    "[" * 100_000,  # nested deeper than Python builds: read as the text it is
    b"{}",
]
JSON_LISTS = [
    None,
    "[]",
    "",
    '["step 1", "step 2"]',
    '["x", 3]',  # not all text: each item reads as the JSON value it is
    '["a", 1, null]',
    '["x", {"a": 1}]',
    '{"a": 1}',
    '"one line"',
    "7",
    "[not json",
    ' ["x"]',
    "null",
    "[" * 100_000,
]
STATUSES = ["pending", "running", "completed", "failed", "cancelled", "PENDING", "weird", "", None, 1]
SUCCESSES = [None, 0, 1, 2, 1.5, "true", "", b"1"]
TEXTS = ["w-1", "", "ünïcødé", None, b"bytes", 7]
COUNTS = [None, 0, 3, -1, "4", "x", 2.5]


def _outcome(build: Any, row: tuple[Any, ...]) -> tuple[str, Any]:
    """What building a model from `row` gives: the model, or the kind of error it raises."""
    try:
        return "model", build(row)
    except (ValidationError, ValueError, TypeError) as exc:
        return "error", type(exc)


def _assert_same(fast: tuple[str, Any], validated: tuple[str, Any]) -> None:
    assert fast[0] == validated[0]
    if fast[0] == "error":
        assert fast[1] is validated[1]
        return
    a, b = fast[1], validated[1]
    assert type(a) is type(b)
    assert a == b
    assert a.model_dump() == b.model_dump()
    assert a.model_dump_json() == b.model_dump_json()
    assert a.model_fields_set == b.model_fields_set
    assert a.model_extra == b.model_extra
    assert [name for name, _ in a] == [name for name, _ in b]
    for name, value in b:
        assert type(getattr(a, name)) is type(value), name


def _workflow_row(**overrides: Any) -> tuple[Any, ...]:
    fields = {
        "id": "w-1",
        "workflow_name": "nightly",
        "status": "completed",
        "created_at": WRITER_AT,
        "started_at": WRITER_AT,
        "completed_at": WRITER_AT,
        "success": 1,
        "error_message": None,
        "metadata": '{"branch": "main", "n": 1}',
        "instance_id": "i-1",
        "last_updated": WRITER_AT,
    }
    fields.update(overrides)
    return tuple(fields[name] for name in rows.WORKFLOW_FIELDS)


def _task_row(**overrides: Any) -> tuple[Any, ...]:
    fields = {
        "id": "t-1",
        "workflow_id": "w-1",
        "task_name": "compile",
        "status": "running",
        "created_at": WRITER_AT,
        "started_at": WRITER_AT,
        "completed_at": None,
        "success": None,
        "error_message": None,
        "output": "ok",
        "logs": '["step 1", "step 2"]',
        "retry_count": 0,
        "execution_order": 2,
        "instance_id": "i-1",
        "last_updated": WRITER_AT,
    }
    fields.update(overrides)
    return tuple(fields[name] for name in rows.TASK_FIELDS)


def _audit_row(**overrides: Any) -> tuple[Any, ...]:
    fields = {
        "id": "e-1",
        "workflow_id": "w-1",
        "task_id": None,
        "event_type": "workflow_step",
        "message": "a step finished",
        "timestamp": WRITER_AT,
        "data": '{"j": 1}',
        "instance_id": "i-1",
    }
    fields.update(overrides)
    return tuple(fields[name] for name in rows.AUDIT_FIELDS)


def test_the_quick_path_gives_every_field_of_each_model():
    """A field left out would take its default, and drop out of model_fields_set."""
    for values, row, model in (
        (rows._workflow_values, _workflow_row(), rows.WorkflowExecution),
        (rows._task_values, _task_row(), rows.TaskExecution),
        (rows._audit_values, _audit_row(), rows.AuditEvent),
    ):
        assert list(values(row)) == list(model.model_fields)


def _refuse_the_validated_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(row: tuple[Any, ...]) -> Any:
        raise AssertionError(f"fell back for {row}")

    for name in ("_validated_workflow", "_validated_task", "_validated_audit"):
        monkeypatch.setattr(rows, name, refuse)


def test_rows_as_the_writer_writes_them_take_the_quick_path(monkeypatch):
    _refuse_the_validated_path(monkeypatch)
    workflow_rows = [
        _workflow_row(),
        _workflow_row(status="pending", started_at=None, completed_at=None, success=None, metadata="{}"),
        _workflow_row(status="failed", success=0, error_message="boom", metadata=None, instance_id=None),
        _workflow_row(last_updated=None),
    ]
    assert len(rows.workflows(workflow_rows)) == 4
    assert rows.tasks([_task_row(), _task_row(logs="[]", retry_count=None, execution_order=None)])
    assert rows.audits([_audit_row(), _audit_row(data="{}", workflow_id=None, task_id="t-1")])


def test_json_values_other_than_objects_take_the_quick_path_too(monkeypatch):
    """Any JSON value is what the model holds, so only text that is not one falls back."""
    _refuse_the_validated_path(monkeypatch)
    values = ['["a",1,null]', "[1,2,3]", "null", '"text"', "42", "-1.5", "false", '{"a":{"b":[]}}']
    built = rows.workflows([_workflow_row(metadata=v) for v in values])
    assert [w.metadata for w in built] == [json.loads(v) for v in values]
    events = rows.audits([_audit_row(data=v) for v in values])
    assert [e.data for e in events] == [json.loads(v) for v in values]
    [task] = rows.tasks([_task_row(logs='["a",1,null,{"b":2}]')])
    assert task.logs == ["a", 1, None, {"b": 2}]


def _case_id(overrides: dict[str, Any]) -> str:
    """The case's repr, cut short: one value is 100,000 characters of JSON."""
    text = repr(overrides)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


# Column by column, each odd value in a row that is otherwise as the writer writes it.
WORKFLOW_CASES = [
    *({"created_at": t} for t in [*TIMESTAMPS, None]),
    *({"started_at": t} for t in TIMESTAMPS),
    *({"completed_at": t} for t in TIMESTAMPS),
    *({"last_updated": t} for t in TIMESTAMPS),
    *({"metadata": m} for m in JSON_OBJECTS),
    *({"status": s} for s in STATUSES),
    *({"success": s} for s in SUCCESSES),
    *({"id": t} for t in TEXTS),
    *({"workflow_name": t} for t in TEXTS),
    *({"error_message": t} for t in TEXTS),
    *({"instance_id": t} for t in TEXTS),
]


@pytest.mark.parametrize("overrides", WORKFLOW_CASES, ids=_case_id)
def test_a_workflow_row_gives_what_the_validated_path_gives(overrides):
    row = _workflow_row(**overrides)
    _assert_same(_outcome(rows.workflow, row), _outcome(rows._validated_workflow, row))


TASK_CASES = [
    *({"created_at": t} for t in [*TIMESTAMPS, None]),
    *({"started_at": t} for t in TIMESTAMPS),
    *({"completed_at": t} for t in TIMESTAMPS),
    *({"last_updated": t} for t in TIMESTAMPS),
    *({"logs": v} for v in JSON_LISTS),
    *({"status": s} for s in STATUSES),
    *({"success": s} for s in SUCCESSES),
    *({"retry_count": c} for c in COUNTS),
    *({"execution_order": c} for c in COUNTS),
    *({"id": t} for t in TEXTS),
    *({"workflow_id": t} for t in TEXTS),
    *({"task_name": t} for t in TEXTS),
    *({"error_message": t} for t in TEXTS),
    *({"output": t} for t in TEXTS),
    *({"instance_id": t} for t in TEXTS),
]


@pytest.mark.parametrize("overrides", TASK_CASES, ids=_case_id)
def test_a_task_row_gives_what_the_validated_path_gives(overrides):
    row = _task_row(**overrides)
    _assert_same(_outcome(rows.task, row), _outcome(rows._validated_task, row))


AUDIT_CASES = [
    *({"timestamp": t} for t in [*TIMESTAMPS, None]),
    *({"data": m} for m in JSON_OBJECTS),
    *({"id": t} for t in TEXTS),
    *({"workflow_id": t} for t in TEXTS),
    *({"task_id": t} for t in TEXTS),
    *({"event_type": t} for t in TEXTS),
    *({"message": t} for t in TEXTS),
    *({"instance_id": t} for t in TEXTS),
]


@pytest.mark.parametrize("overrides", AUDIT_CASES, ids=_case_id)
def test_an_audit_row_gives_what_the_validated_path_gives(overrides):
    row = _audit_row(**overrides)
    _assert_same(_outcome(rows.audit, row), _outcome(rows._validated_audit, row))


def _pick(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


_FAST_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST_SETTINGS
@given(
    st.tuples(
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(STATUSES),
        _pick(TIMESTAMPS),
        _pick([None, *TIMESTAMPS]),
        _pick([None, *TIMESTAMPS]),
        _pick(SUCCESSES),
        _pick(TEXTS),
        _pick(JSON_OBJECTS),
        _pick(TEXTS),
        _pick([None, *TIMESTAMPS]),
    )
)
def test_any_mix_of_workflow_columns_gives_what_the_validated_path_gives(row):
    _assert_same(_outcome(rows.workflow, row), _outcome(rows._validated_workflow, row))


@_FAST_SETTINGS
@given(
    st.tuples(
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(STATUSES),
        _pick(TIMESTAMPS),
        _pick([None, *TIMESTAMPS]),
        _pick([None, *TIMESTAMPS]),
        _pick(SUCCESSES),
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(JSON_LISTS),
        _pick(COUNTS),
        _pick(COUNTS),
        _pick(TEXTS),
        _pick([None, *TIMESTAMPS]),
    )
)
def test_any_mix_of_task_columns_gives_what_the_validated_path_gives(row):
    _assert_same(_outcome(rows.task, row), _outcome(rows._validated_task, row))


@_FAST_SETTINGS
@given(
    st.tuples(
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(TEXTS),
        _pick(TIMESTAMPS),
        _pick(JSON_OBJECTS),
        _pick(TEXTS),
    )
)
def test_any_mix_of_audit_columns_gives_what_the_validated_path_gives(row):
    _assert_same(_outcome(rows.audit, row), _outcome(rows._validated_audit, row))


@_FAST_SETTINGS
@given(
    st.datetimes(timezones=st.just(timezone.utc)),
    st.dictionaries(
        st.text(max_size=5),
        st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3),
        max_size=4,
    ),
    st.lists(st.text(max_size=8), max_size=4),
)
def test_any_writer_shaped_values_give_what_the_validated_path_gives(moment, metadata, logs):
    at = moment.isoformat(timespec="microseconds")
    row = _workflow_row(created_at=at, last_updated=at, metadata=json.dumps(metadata))
    _assert_same(_outcome(rows.workflow, row), _outcome(rows._validated_workflow, row))
    task = _task_row(created_at=at, logs=json.dumps(logs))
    _assert_same(_outcome(rows.task, task), _outcome(rows._validated_task, task))
    audit = _audit_row(timestamp=at, data=json.dumps(metadata))
    _assert_same(_outcome(rows.audit, audit), _outcome(rows._validated_audit, audit))


@pytest.mark.parametrize(
    "build, validated, row",
    [
        (rows.workflow, rows._slow_workflow, _workflow_row()),
        (rows.task, rows._slow_task, _task_row()),
        (rows.audit, rows._slow_audit, _audit_row()),
    ],
)
def test_a_fast_model_behaves_like_a_validated_one(build, validated, row):
    fast, slow = build(row), validated(row)
    assert fast == slow and (fast != slow) is False
    assert repr(fast) == repr(slow) and str(fast) == str(slow)
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert type(fast).model_validate(fast.model_dump()) == fast
    assert type(fast).model_validate_json(fast.model_dump_json()) == fast
    assert dict(fast) == dict(slow)
    with pytest.raises(ValidationError, match="frozen"):
        fast.id = "other"
    with pytest.raises(TypeError):  # frozen, but a dict or list field makes it unhashable
        hash(slow)
    with pytest.raises(TypeError):
        hash(fast)
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert copy.deepcopy(fast) == fast and copy.copy(fast) == fast
    changed = fast.model_copy(update={"id": "other"})
    assert changed.id == "other" and fast.id == row[0]
    assert fast.model_fields_set == set(type(fast).model_fields)
    assert fast.model_fields_set is not build(row).model_fields_set  # each model has its own
    assert isinstance(fast, BaseModel)


def _file_with_rows(
    path: Path,
    workflow_rows: list[tuple[Any, ...]],
    task_rows: list[tuple[Any, ...]],
    event_rows: list[tuple[Any, ...]],
) -> Path:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        for statement in schema.upgrade_statements(0):
            conn.execute(statement)
        for table, columns, table_rows in (
            ("workflow_executions", rows.WORKFLOW_COLUMNS, workflow_rows),
            ("task_executions", rows.TASK_COLUMNS, task_rows),
            ("audit_events", rows.AUDIT_COLUMNS, event_rows),
        ):
            marks = ",".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", table_rows)
    finally:
        conn.close()
    return path


def test_the_reader_gives_the_validated_models_for_a_file_another_writer_filled(tmp_path):
    odd_times = [
        WRITER_AT,
        "2026-12-01T07:37:36.123456789+00:00",
        "2026-12-01 07:37:36",
        "2026-12-01T07:37:36Z",
        "2026-12-01T09:37:36.123456+02:00",
    ]
    workflow_rows = [
        _workflow_row(id=f"w-{i}", created_at=at, last_updated=at, metadata=meta, success=success)
        for i, (at, meta, success) in enumerate(
            (at, meta, success)
            for at in odd_times
            for meta in (None, "{}", "[1]", '{"a": 1}')
            for success in (None, 0, 1)
        )
    ]
    task_rows = [
        _task_row(id=f"t-{i}", created_at=at, logs=logs)
        for i, at in enumerate(odd_times)
        for logs in ('["x", 3]',)
    ]
    event_rows = [
        _audit_row(id=f"e-{i}", timestamp=at, data=data)
        for i, (at, data) in enumerate((a, d) for a in odd_times for d in (None, "3", '{"j": 1}'))
    ]
    db = _file_with_rows(tmp_path / "other.db", workflow_rows, task_rows, event_rows)
    with Reader(db) as reader:
        got = reader.list_workflows(limit=1000)
        raw = reader.query(f"{workflows.SQL_NEWEST_WORKFLOWS[False, False]}", (1000, 0))
        assert len(got) == len(workflow_rows)
        for model, row in zip(got, raw, strict=True):
            _assert_same(("model", model), ("model", rows._validated_workflow(row)))
        assert reader.get_workflow("w-3") == rows._validated_workflow(
            reader.query(workflows.SQL_WORKFLOW, ("w-3",))[0]
        )
        raw_tasks = reader.query(tasks.SQL_TASKS_OF_WORKFLOW, ("w-1",))
        assert reader.get_tasks_for_workflow("w-1") == [rows._validated_task(r) for r in raw_tasks]
        raw_events = reader.query(audit.SQL_AUDIT_TRAIL, ("w-1",))
        assert reader.get_audit_trail("w-1") == [rows._validated_audit(r) for r in raw_events]
        assert len(raw_tasks) == len(task_rows) and len(raw_events) == len(event_rows)


def test_an_unknown_status_in_the_file_fails_the_read_as_before(tmp_path):
    db = _file_with_rows(tmp_path / "odd.db", [_workflow_row(status="archived")], [], [])
    with Reader(db) as reader, pytest.raises(ValueError, match="archived"):
        reader.list_workflows()
    with pytest.raises(ValueError, match="archived"):
        rows._validated_workflow(_workflow_row(status="archived"))


@pytest.mark.parametrize(
    "at",
    ["2026-12-01T07:37:36.123456789+00:00", "2026-12-01 07:37:36", "2026-12-01T07:37:36.123456+02:00"],
)
def test_other_writers_timestamps_take_the_validated_path(monkeypatch, at):
    taken: list[tuple[Any, ...]] = []
    validated = rows._validated_workflow

    def spy(row: tuple[Any, ...]) -> Any:
        taken.append(row)
        return validated(row)

    monkeypatch.setattr(rows, "_validated_workflow", spy)
    given = [_workflow_row(), _workflow_row(started_at=at), _workflow_row(last_updated=at)]
    assert rows.workflows(given) == [validated(row) for row in given]
    assert taken == given[1:]


def test_a_prepared_value_the_model_refuses_sends_the_whole_list_the_validated_way(monkeypatch):
    prepare = rows._workflow_values

    def wrong_for_one(row: tuple[Any, ...]) -> dict[str, Any]:
        values = prepare(row)
        if row[0] == "w-2":
            values["id"] = 2  # not a str: the model refuses it
        return values

    monkeypatch.setattr(rows, "_workflow_values", wrong_for_one)
    given = [_workflow_row(id=f"w-{i}") for i in range(4)]
    assert rows.workflows(given) == [rows._validated_workflow(row) for row in given]


def test_list_workflow_rows_gives_the_rows_list_workflows_builds_its_models_from(tmp_path):
    given = [
        _workflow_row(id=f"w-{i}", created_at=f"2026-12-01T07:37:3{i}.123456+00:00", status=status)
        for i, status in enumerate(["running", "failed", "completed", "failed"])
    ]
    db = _file_with_rows(tmp_path / "plain.db", given, [], [])
    with Reader(db) as reader:
        for kwargs in ({}, {"limit": 2, "offset": 1}, {"status": "failed"}, {"instance_id": "i-1"}):
            plain = reader.list_workflow_rows(**kwargs)
            assert rows.workflows(plain) == reader.list_workflows(**kwargs)
        assert [row[0] for row in reader.list_workflow_rows()] == ["w-3", "w-2", "w-1", "w-0"]
        assert reader.list_workflow_rows(limit=1)[0] == given[3]  # as stored: text, JSON text, 0/1
        assert tuple(WorkflowExecution.model_fields) == Reader.WORKFLOW_ROW_COLUMNS
        with pytest.raises(CallerError):
            reader.list_workflow_rows(limit=-1)


def test_a_value_strict_validation_refuses_sends_only_its_row_the_validated_way(monkeypatch):
    taken: list[tuple[Any, ...]] = []
    validated = rows._validated_workflow

    def spy(row: tuple[Any, ...]) -> Any:
        taken.append(row)
        return validated(row)

    monkeypatch.setattr(rows, "_validated_workflow", spy)
    given = [
        _workflow_row(id="w-0"),
        _workflow_row(id="w-1", workflow_name=b"bytes"),  # lax validation reads bytes as text
        _workflow_row(id="w-2", started_at="2026-12-01 07:37:36"),  # odd while being prepared
        _workflow_row(id="w-3"),
        _workflow_row(id="w-4", instance_id=b"i-4"),
        _workflow_row(id="w-5"),
    ]
    built = rows.workflows(given)
    assert built == [validated(row) for row in given]
    assert [w.workflow_name for w in built][1] == "bytes"
    assert sorted(row[0] for row in taken) == ["w-1", "w-2", "w-4"]
