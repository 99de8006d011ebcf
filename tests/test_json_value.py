"""JsonValue accepts, converts and refuses what the plain union of its members does."""

from __future__ import annotations

import collections
import decimal
import enum
import re
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from see_persistence import AuditEvent, JsonValue, TaskExecution, WorkflowExecution

pytestmark = pytest.mark.unit

UNION = TypeAdapter(dict[str, Any] | list[Any] | str | int | float | bool | None)
JSON_VALUE = TypeAdapter(JsonValue)


class _Text(str, enum.Enum):
    A = "a"


class _Number(enum.IntEnum):
    ONE = 1


class _Dict(dict):  # type: ignore[type-arg]
    pass


VALUES = [
    {},
    {"a": 1, "b": [None, {"c": 2.5}]},
    {1: 2},
    {b"k": 1},
    {"a": object()},
    [1, "x"],
    (1, 2),
    {1, 2},
    frozenset(),
    collections.deque([1]),
    "x",
    "",
    b"x",
    bytearray(b"x"),
    0,
    -(2**70),
    True,
    False,
    1.5,
    float("inf"),
    None,
    decimal.Decimal("1.5"),
    decimal.Decimal("2"),
    _Text.A,
    _Number.ONE,
    _Dict(a=1),
    collections.OrderedDict(a=1),
    object(),
    1 + 2j,
]


def _outcome(adapter: TypeAdapter[Any], value: Any, strict: bool) -> tuple[Any, ...]:
    try:
        result = adapter.validate_python(value, strict=strict)
    except ValidationError as exc:
        return ("error", exc.error_count() > 0)
    return ("value", type(result), result)


def _stable_id(value: object) -> str:
    """repr without memory addresses: pytest-xdist's workers must collect the same test ids."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


@pytest.mark.parametrize("strict", [False, True], ids=["lax", "strict"])
@pytest.mark.parametrize("value", VALUES, ids=_stable_id)
def test_json_value_validates_as_the_plain_union_does(value, strict):
    assert _outcome(JSON_VALUE, value, strict) == _outcome(UNION, value, strict)


@pytest.mark.parametrize("value", [{"a": 1}, [1]])
def test_a_container_is_copied_as_the_union_copies_it(value):
    assert JSON_VALUE.validate_python(value) is not value


@pytest.mark.parametrize("text", ['{"a":[1,{"b":null}]}', "[1,2]", '"s"', "1", "-1.5e3", "true", "null"])
def test_json_input_reads_as_the_union_reads_it(text):
    assert JSON_VALUE.validate_json(text) == UNION.validate_json(text)
    assert JSON_VALUE.validate_json(text, strict=True) == UNION.validate_json(text, strict=True)


def test_the_json_schema_is_the_unions():
    assert JSON_VALUE.json_schema() == UNION.json_schema()


def test_models_round_trip_their_json_values():
    at = "2026-01-01T00:00:00Z"
    workflow = WorkflowExecution(
        id="w", workflow_name="n", status="running", created_at=at, metadata=[1, {"a": None}]
    )
    task = TaskExecution(
        id="t", workflow_id="w", task_name="n", status="running", created_at=at, logs=["a", 1]
    )
    event = AuditEvent(id="e", event_type="x", message="m", timestamp=at, data="text")
    for model in (workflow, task, event):
        assert type(model).model_validate_json(model.model_dump_json()) == model
        assert type(model).model_validate(model.model_dump()) == model
    assert '"metadata":[1,{"a":null}],' in workflow.model_dump_json()
