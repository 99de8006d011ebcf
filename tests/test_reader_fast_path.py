"""The Reader's fast row path: the same models as the validated path, for every row shape."""

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

from see_persistence import Reader
from see_persistence.protocol import schema
from see_persistence.reader import queries

pytestmark = pytest.mark.unit

WRITER_AT = "2026-12-01T07:37:36.123456+00:00"  # the writer's form: the fast path takes it
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
    assert a.__pydantic_extra__ == b.__pydantic_extra__
    assert a.__pydantic_private__ == b.__pydantic_private__
    assert list(a.__dict__) == list(b.__dict__)
    for name, value in b.__dict__.items():
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
    return tuple(fields[name] for name in queries._WORKFLOW_FIELDS)


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
    return tuple(fields[name] for name in queries._TASK_FIELDS)


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
    return tuple(fields[name] for name in queries._AUDIT_FIELDS)


def test_the_models_can_still_be_built_without_validation():
    assert queries._FAST_WORKFLOWS and queries._FAST_TASKS and queries._FAST_AUDIT


def test_rows_as_the_writer_writes_them_take_the_fast_path(monkeypatch):
    def refuse(row: tuple[Any, ...]) -> Any:
        raise AssertionError(f"fell back for {row}")

    for name in ("_validated_workflow", "_validated_task", "_validated_audit"):
        monkeypatch.setattr(queries, name, refuse)
    rows = [
        _workflow_row(),
        _workflow_row(status="pending", started_at=None, completed_at=None, success=None, metadata="{}"),
        _workflow_row(status="failed", success=0, error_message="boom", metadata=None, instance_id=None),
        _workflow_row(last_updated=None),
    ]
    assert len(queries._workflows(rows)) == 4
    assert queries._tasks([_task_row(), _task_row(logs="[]", retry_count=None, execution_order=None)])
    assert queries._audits([_audit_row(), _audit_row(data="{}", workflow_id=None, task_id="t-1")])


def test_json_values_other_than_objects_are_built_fast_too(monkeypatch):
    """Any JSON value is what the model holds, so only text that is not one falls back."""

    def refuse(row: tuple[Any, ...]) -> Any:
        raise AssertionError(f"fell back for {row}")

    for name in ("_validated_workflow", "_validated_task", "_validated_audit"):
        monkeypatch.setattr(queries, name, refuse)
    values = ['["a",1,null]', "[1,2,3]", "null", '"text"', "42", "-1.5", "false", '{"a":{"b":[]}}']
    workflows = queries._workflows([_workflow_row(metadata=v) for v in values])
    assert [w.metadata for w in workflows] == [json.loads(v) for v in values]
    audits = queries._audits([_audit_row(data=v) for v in values])
    assert [e.data for e in audits] == [json.loads(v) for v in values]
    [task] = queries._tasks([_task_row(logs='["a",1,null,{"b":2}]')])
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
    _assert_same(_outcome(queries._workflow, row), _outcome(queries._validated_workflow, row))


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
    _assert_same(_outcome(queries._task, row), _outcome(queries._validated_task, row))


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
    _assert_same(_outcome(queries._audit, row), _outcome(queries._validated_audit, row))


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
    _assert_same(_outcome(queries._workflow, row), _outcome(queries._validated_workflow, row))


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
    _assert_same(_outcome(queries._task, row), _outcome(queries._validated_task, row))


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
    _assert_same(_outcome(queries._audit, row), _outcome(queries._validated_audit, row))


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
    _assert_same(_outcome(queries._workflow, row), _outcome(queries._validated_workflow, row))
    task = _task_row(created_at=at, logs=json.dumps(logs))
    _assert_same(_outcome(queries._task, task), _outcome(queries._validated_task, task))
    audit = _audit_row(timestamp=at, data=json.dumps(metadata))
    _assert_same(_outcome(queries._audit, audit), _outcome(queries._validated_audit, audit))


@pytest.mark.parametrize(
    "build, validated, row",
    [
        (queries._workflow, queries._slow_workflow, _workflow_row()),
        (queries._task, queries._slow_task, _task_row()),
        (queries._audit, queries._slow_audit, _audit_row()),
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


def test_a_model_that_gains_what_construction_skips_is_no_longer_built_without_validation():
    from pydantic import PrivateAttr, field_validator

    class Plain(BaseModel):
        id: str

    class Checked(BaseModel):
        id: str

        @field_validator("id")
        @classmethod
        def _upper(cls, value: str) -> str:
            return value.upper()

    class Private(BaseModel):
        id: str
        _seen: int = PrivateAttr(default=0)

    assert queries._constructible(Plain, ("id",)) is True
    assert queries._constructible(Plain, ("id", "other")) is False
    assert queries._constructible(Checked, ("id",)) is False
    assert queries._constructible(Private, ("id",)) is False


def _file_with_rows(
    path: Path, workflows: list[tuple[Any, ...]], tasks: list[tuple[Any, ...]], events: list[tuple[Any, ...]]
) -> Path:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        for statement in schema.upgrade_statements(0):
            conn.execute(statement)
        for table, columns, rows in (
            ("workflow_executions", queries._WORKFLOW_COLUMNS, workflows),
            ("task_executions", queries._TASK_COLUMNS, tasks),
            ("audit_events", queries._AUDIT_COLUMNS, events),
        ):
            marks = ",".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
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
    workflows = [
        _workflow_row(id=f"w-{i}", created_at=at, last_updated=at, metadata=meta, success=success)
        for i, (at, meta, success) in enumerate(
            (at, meta, success)
            for at in odd_times
            for meta in (None, "{}", "[1]", '{"a": 1}')
            for success in (None, 0, 1)
        )
    ]
    tasks = [
        _task_row(id=f"t-{i}", created_at=at, logs=logs)
        for i, at in enumerate(odd_times)
        for logs in ('["x", 3]',)
    ]
    events = [
        _audit_row(id=f"e-{i}", timestamp=at, data=data)
        for i, (at, data) in enumerate((a, d) for a in odd_times for d in (None, "3", '{"j": 1}'))
    ]
    db = _file_with_rows(tmp_path / "other.db", workflows, tasks, events)
    with Reader(db) as reader:
        got = reader.list_workflows(limit=1000)
        raw = reader.query(f"{queries._SQL_NEWEST_WORKFLOWS[False, False]}", (1000, 0))
        assert len(got) == len(workflows)
        for model, row in zip(got, raw, strict=True):
            _assert_same(("model", model), ("model", queries._validated_workflow(row)))
        assert reader.get_workflow("w-3") == queries._validated_workflow(
            reader.query(queries._SQL_WORKFLOW, ("w-3",))[0]
        )
        raw_tasks = reader.query(queries._SQL_TASKS_OF_WORKFLOW, ("w-1",))
        assert reader.get_tasks_for_workflow("w-1") == [queries._validated_task(r) for r in raw_tasks]
        raw_events = reader.query(queries._SQL_AUDIT_TRAIL, ("w-1",))
        assert reader.get_audit_trail("w-1") == [queries._validated_audit(r) for r in raw_events]
        assert len(raw_tasks) == len(tasks) and len(raw_events) == len(events)


def test_an_unknown_status_in_the_file_fails_the_read_as_before(tmp_path):
    db = _file_with_rows(tmp_path / "odd.db", [_workflow_row(status="archived")], [], [])
    with Reader(db) as reader, pytest.raises(ValueError, match="archived"):
        reader.list_workflows()
    with pytest.raises(ValueError, match="archived"):
        queries._validated_workflow(_workflow_row(status="archived"))


@pytest.mark.parametrize(
    "at",
    ["2026-12-01T07:37:36.123456789+00:00", "2026-12-01 07:37:36", "2026-12-01T07:37:36.123456+02:00"],
)
def test_other_writers_timestamps_take_the_validated_path(monkeypatch, at):
    taken: list[tuple[Any, ...]] = []
    validated = queries._validated_workflow

    def spy(row: tuple[Any, ...]) -> Any:
        taken.append(row)
        return validated(row)

    monkeypatch.setattr(queries, "_validated_workflow", spy)
    rows = [_workflow_row(), _workflow_row(started_at=at), _workflow_row(last_updated=at)]
    assert queries._workflows(rows) == [validated(row) for row in rows]
    assert taken == rows[1:]
