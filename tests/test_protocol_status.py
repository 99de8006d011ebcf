"""Statuses and their effects (status.py, statements.py), timestamps.py and ids.py."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from see_persistence.protocol import ids, timestamps
from see_persistence.protocol.schema import upgrade_statements
from see_persistence.protocol.statements import TASK_STATUS_UPDATES, WORKFLOW_STATUS_UPDATES
from see_persistence.protocol.status import (
    ACTIVE_STATUSES,
    STATUS_EFFECTS,
    Status,
    StatusEffect,
)

pytestmark = pytest.mark.unit

ALLOWED = "pending, running, completed, failed, cancelled"

# --- Status ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_status_equals_its_lowercase_text(status: Status) -> None:
    text = status.name.lower()
    assert status == text
    assert text == status
    assert status.value == text
    assert str(status) == text
    assert f"{status}" == text
    assert hash(status) == hash(text)
    assert {text: 1}[status] == 1


def test_status_members() -> None:
    assert [s.value for s in Status] == ["pending", "running", "completed", "failed", "cancelled"]
    assert str(Status.RUNNING) == "running"
    assert Status.RUNNING != "RUNNING"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Status.FAILED, Status.FAILED),
        ("running", Status.RUNNING),
        ("RUNNING", Status.RUNNING),
        ("Completed", Status.COMPLETED),
        ("cAnCeLlEd", Status.CANCELLED),
        ("  pending\n", Status.PENDING),
    ],
)
def test_parse_accepts_status_and_text_in_any_case(value: object, expected: Status) -> None:
    assert Status.parse(value) is expected


@pytest.mark.parametrize(
    "value",
    ["", "done", "runing", "run ning", "Status.RUNNING", None, 1, b"running", ["running"]],
)
def test_parse_rejects_with_allowed_values(value: object) -> None:
    with pytest.raises(ValueError) as info:
        Status.parse(value)
    message = str(info.value)
    assert message == f"unknown status {value!r}: expected one of {ALLOWED}"


def test_status_effects_cover_every_status() -> None:
    assert set(STATUS_EFFECTS) == set(Status)
    assert all(isinstance(effect, StatusEffect) for effect in STATUS_EFFECTS.values())


@pytest.mark.parametrize(
    ("status", "effect"),
    [
        (Status.PENDING, StatusEffect(False, False, None)),
        (Status.RUNNING, StatusEffect(True, False, None)),
        (Status.COMPLETED, StatusEffect(False, True, True)),
        (Status.FAILED, StatusEffect(False, True, False)),
        (Status.CANCELLED, StatusEffect(False, True, False)),
    ],
    ids=str,
)
def test_status_effect(status: Status, effect: StatusEffect) -> None:
    assert STATUS_EFFECTS[status] == effect


def test_active_statuses() -> None:
    assert set(ACTIVE_STATUSES) == {Status.PENDING, Status.RUNNING}


# --- the status UPDATE statements --------------------------------------------------------------

CREATED = "2024-05-01T10:00:00.000000+00:00"
AT_1, NOW_1 = "2024-05-01T10:00:01.000000+00:00", "2024-05-01T10:00:01.500000+00:00"
AT_2, NOW_2 = "2024-05-01T10:00:02.000000+00:00", "2024-05-01T10:00:02.500000+00:00"

# kind -> (table, statements, columns read back)
KINDS: dict[str, tuple[str, dict[str, str], str]] = {
    "workflow": (
        "workflow_executions",
        WORKFLOW_STATUS_UPDATES,
        "status, started_at, completed_at, success, error_message, last_updated",
    ),
    "task": (
        "task_executions",
        TASK_STATUS_UPDATES,
        "status, started_at, completed_at, success, error_message, last_updated, output",
    ),
}


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """A database made with upgrade_statements(0), with two workflows and two tasks."""
    db = sqlite3.connect(":memory:")
    for statement in upgrade_statements(0):
        db.execute(statement)
    for suffix in ("1", "other"):
        db.execute(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, "
            "error_message, metadata) VALUES (?, 'nightly', 'pending', ?, 'earlier error', '{}')",
            (f"wf-{suffix}", CREATED),
        )
        db.execute(
            "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, "
            "error_message, output, logs) "
            "VALUES (?, ?, 'compile', 'pending', ?, 'earlier error', 'earlier output', '[]')",
            (f"task-{suffix}", f"wf-{suffix}", CREATED),
        )
    yield db
    db.close()


def apply(
    conn: sqlite3.Connection,
    kind: str,
    status: Status,
    *,
    at: str,
    now: str,
    error_message: str | None = None,
    output: str | None = None,
    record: str = "1",
) -> dict[str, Any]:
    """Run the status statement of `kind` on record `record` and return the row afterwards."""
    updates = KINDS[kind][1]
    row_id = f"{'wf' if kind == 'workflow' else 'task'}-{record}"
    params = {
        "id": row_id,
        "status": status.value,
        "error_message": error_message,
        "output": output,
        "now": now,
        "at": at,
    }
    cursor = conn.execute(updates[status.value], params)
    assert cursor.rowcount == 1
    return row(conn, kind, row_id)


def row(conn: sqlite3.Connection, kind: str, row_id: str) -> dict[str, Any]:
    table, _updates, read = KINDS[kind]
    cursor = conn.execute(f"SELECT {read} FROM {table} WHERE id = ?", (row_id,))
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def expected_success(status: Status) -> int | None:
    success = STATUS_EFFECTS[status].success
    return None if success is None else int(success)


def test_statements_cover_every_status() -> None:
    assert set(WORKFLOW_STATUS_UPDATES) == {s.value for s in Status}
    assert set(TASK_STATUS_UPDATES) == {s.value for s in Status}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", list(Status), ids=str)
def test_first_status_change_follows_status_effects(
    conn: sqlite3.Connection, kind: str, status: Status
) -> None:
    effect = STATUS_EFFECTS[status]
    result = apply(conn, kind, status, at=AT_1, now=NOW_1)
    assert result["status"] == status.value
    assert result["last_updated"] == NOW_1
    assert result["started_at"] == (AT_1 if effect.sets_started_at else None)
    assert result["completed_at"] == (AT_1 if effect.sets_completed_at else None)
    assert result["success"] == expected_success(status)
    assert result["error_message"] == "earlier error"  # None keeps what was there
    if kind == "task":
        assert result["output"] == "earlier output"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", list(Status), ids=str)
def test_second_status_change_follows_status_effects(
    conn: sqlite3.Connection, kind: str, status: Status
) -> None:
    effect = STATUS_EFFECTS[status]
    apply(conn, kind, status, at=AT_1, now=NOW_1)
    result = apply(conn, kind, status, at=AT_2, now=NOW_2, error_message="new", output="out")
    assert result["status"] == status.value
    assert result["last_updated"] == NOW_2
    assert result["started_at"] == (AT_1 if effect.sets_started_at else None)  # kept
    assert result["completed_at"] == (AT_2 if effect.sets_completed_at else None)
    assert result["success"] == expected_success(status)
    assert result["error_message"] == "new"
    if kind == "task":
        assert result["output"] == "out"


@pytest.mark.parametrize("kind", KINDS)
def test_running_then_completed_keeps_started_at(conn: sqlite3.Connection, kind: str) -> None:
    apply(conn, kind, Status.RUNNING, at=AT_1, now=NOW_1)
    result = apply(conn, kind, Status.COMPLETED, at=AT_2, now=NOW_2)
    assert (result["started_at"], result["completed_at"], result["success"]) == (AT_1, AT_2, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("later", [Status.PENDING, Status.RUNNING], ids=str)
@pytest.mark.parametrize("earlier", [Status.COMPLETED, Status.FAILED], ids=str)
def test_status_without_success_effect_leaves_success(
    conn: sqlite3.Connection, kind: str, earlier: Status, later: Status
) -> None:
    apply(conn, kind, earlier, at=AT_1, now=NOW_1)
    result = apply(conn, kind, later, at=AT_2, now=NOW_2)
    assert result["success"] == expected_success(earlier)
    assert result["completed_at"] == AT_1


@pytest.mark.parametrize("kind", KINDS)
def test_empty_error_message_replaces_the_old_one(conn: sqlite3.Connection, kind: str) -> None:
    result = apply(conn, kind, Status.FAILED, at=AT_1, now=NOW_1, error_message="")
    assert result["error_message"] == ""


def test_workflow_update_has_no_output() -> None:
    assert all("output" not in sql for sql in WORKFLOW_STATUS_UPDATES.values())
    assert all("output = COALESCE(:output" in sql for sql in TASK_STATUS_UPDATES.values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", list(Status), ids=str)
def test_update_touches_only_its_record(conn: sqlite3.Connection, kind: str, status: Status) -> None:
    other = "wf-other" if kind == "workflow" else "task-other"
    before = row(conn, kind, other)
    apply(conn, kind, status, at=AT_1, now=NOW_1, error_message="e", output="o")
    assert row(conn, kind, other) == before


@pytest.mark.parametrize("kind", KINDS)
def test_update_of_unknown_record_changes_no_row(conn: sqlite3.Connection, kind: str) -> None:
    _table, updates, _read = KINDS[kind]
    params = {"id": "missing", "status": "running", "error_message": None, "output": None}
    cursor = conn.execute(updates["running"], {**params, "now": NOW_1, "at": AT_1})
    assert cursor.rowcount == 0


# --- timestamps --------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("unix_us", "text"),
    [
        (0, "1970-01-01T00:00:00.000000+00:00"),
        (1, "1970-01-01T00:00:00.000001+00:00"),
        (1_700_000_000_123_456, "2023-11-14T22:13:20.123456+00:00"),
        (timestamps.MAX_TIMESTAMP_US, "9999-12-31T23:59:59.999999+00:00"),
    ],
)
def test_format_us(unix_us: int, text: str) -> None:
    assert timestamps.format_us(unix_us) == text


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=timestamps.MAX_TIMESTAMP_US))
def test_format_parse_round_trip(unix_us: int) -> None:
    text = timestamps.format_us(unix_us)
    assert len(text) == 32
    assert text.endswith("+00:00")
    value = timestamps.parse(text)
    assert value == EPOCH + timedelta(microseconds=unix_us)
    assert value.utcoffset() == timedelta(0)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(min_value=0, max_value=timestamps.MAX_TIMESTAMP_US),
    st.integers(min_value=0, max_value=timestamps.MAX_TIMESTAMP_US),
)
def test_formatted_text_sorts_like_time(a: int, b: int) -> None:
    assert (timestamps.format_us(a) < timestamps.format_us(b)) == (a < b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00.250000Z", datetime(2024, 5, 1, 10, 0, 0, 250000, timezone.utc)),
        ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01 10:00:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),  # CURRENT_TIMESTAMP
        (
            "2024-05-01T12:00:00.000000+02:00",
            datetime(2024, 5, 1, 10, tzinfo=timezone.utc),
        ),
    ],
)
def test_parse_gives_aware_datetimes(text: str, expected: datetime) -> None:
    value = timestamps.parse(text)
    assert value.tzinfo is not None
    assert value == expected


# --- ids ---------------------------------------------------------------------------------------

MS = st.integers(min_value=0, max_value=(1 << 48) - 1)
COUNTER = st.integers(min_value=0, max_value=0xFFF)
RANDOM = st.integers(min_value=0, max_value=(1 << 62) - 1)


@settings(max_examples=200, deadline=None, database=None)
@given(MS, COUNTER, RANDOM)
def test_format_uuid7_is_a_valid_version_7_uuid(ms: int, counter: int, rand: int) -> None:
    text = ids.format_uuid7(ms, counter, rand)
    value = uuid.UUID(text)
    assert str(value) == text  # canonical: lowercase, 8-4-4-4-12
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == ms
    assert (value.int >> 64) & 0xFFF == counter
    assert value.int & ((1 << 62) - 1) == rand


@settings(max_examples=300, deadline=None, database=None)
@given(st.tuples(MS, COUNTER, RANDOM), st.tuples(MS, COUNTER, RANDOM))
def test_format_uuid7_orders_by_time_then_counter(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    text_a, text_b = ids.format_uuid7(*a), ids.format_uuid7(*b)
    if a[:2] < b[:2]:
        assert text_a < text_b
    elif a[:2] > b[:2]:
        assert text_a > text_b
    assert (text_a < text_b) == (a < b)


def test_format_uuid7_same_millisecond_counter_increases() -> None:
    made = [ids.format_uuid7(1_700_000_000_000, counter, (1 << 62) - 1 - counter) for counter in range(4096)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_format_uuid7_known_value() -> None:
    text = ids.format_uuid7(0x0190A6F27C3E, 0xD41, 0x0A9B1C2D3E4F5A6B)
    assert text == "0190a6f2-7c3e-7d41-8a9b-1c2d3e4f5a6b"
