"""The writer's fast path (protocol/binding.py) gives exactly the general path's answer, or defers to it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_operations import VALID, nested_json

from see_persistence.protocol import binding, operations, statements, timestamps
from see_persistence.protocol.errors import InvalidOperation
from see_persistence.protocol.status import Status

pytestmark = pytest.mark.unit

INSTANCE, NOW = "instance-1", "2026-12-01T09:00:00.000000+00:00"


def general_path(name: str, payload: Any) -> tuple[statements.Statement, tuple[Any, ...]] | None:
    """What the writer does without the fast path: validate, pick the statement, bind."""
    try:
        values = operations.validate_operation(name, payload)
    except InvalidOperation:
        return None
    values.update(instance_id=INSTANCE, now=NOW, at=timestamps.format_us(values["at_us"]))
    statement = statements.statement_for(name, values)
    return statement, statement.bind(values)


def test_every_frequent_operation_has_a_fast_path():
    assert set(binding.FAST_BINDS) == set(operations.OPERATIONS) - {operations.HELLO, operations.PRUNE}


@pytest.mark.parametrize("name", sorted(binding.FAST_BINDS))
def test_the_usual_payload_takes_the_fast_path_with_the_general_answer(name):
    payload = dict(VALID[name])
    bound = binding.FAST_BINDS[name](payload, INSTANCE, NOW)
    assert bound is not None
    assert bound == general_path(name, payload)


@pytest.mark.parametrize("status", [s.value for s in Status])
@pytest.mark.parametrize("name", [operations.UPDATE_WORKFLOW_STATUS, operations.UPDATE_TASK_STATUS])
def test_each_status_binds_its_own_statement(name, status):
    payload = {**VALID[name], "status": status}
    bound = binding.FAST_BINDS[name](payload, INSTANCE, NOW)
    assert bound is not None and bound == general_path(name, payload)


ODD_VALUES = [
    None,
    "",
    " ",
    "\t\n",
    "é",
    "ok",
    "a" * (operations.MAX_ID_CHARS + 1),
    "a" * (operations.MAX_NAME_CHARS + 1),
    "\ud800",
    0,
    -1,
    1,
    True,
    False,
    1.5,
    operations.INT32_MAX + 1,
    operations.INT32_MIN - 1,
    timestamps.MAX_TIMESTAMP_US + 1,
    2**70,
    "{}",
    "[]",
    '{"a":1}',
    " {}",
    "{} ",
    '{"a":NaN}',
    '{"a":Infinity}',
    "{",
    '{"a":1}x',
    "null",
    nested_json(operations.MAX_JSON_DEPTH),
    nested_json(operations.MAX_JSON_DEPTH + 1),
    '{"é":"ü"}',
    "Running",
    "RUNNING",
    " running ",
    "running",
    "unknown",
    Status.FAILED,
    b"bytes",
    [1],
    {"a": 1},
]


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(
    name=st.sampled_from(sorted(binding.FAST_BINDS)),
    changes=st.lists(
        st.tuples(st.sampled_from(["set", "drop", "add"]), st.integers(0, 10), st.sampled_from(ODD_VALUES)),
        max_size=3,
    ),
)
def test_fast_path_never_disagrees_with_the_general_path(name, changes):
    payload: Any = dict(VALID[name])
    for change, index, value in changes:
        keys = sorted(payload)
        if change == "set" and keys:
            payload[keys[index % len(keys)]] = value
        elif change == "drop" and keys:
            del payload[keys[index % len(keys)]]
        elif change == "add":
            payload[f"extra{index}"] = value
    bound = binding.FAST_BINDS[name](payload, INSTANCE, NOW)
    if bound is not None:  # the fast path may only ever answer what the general path answers
        assert bound == general_path(name, payload)


@pytest.mark.parametrize("payload", [None, [], "text", 7, {1: 2}])
def test_a_payload_that_is_not_a_dict_of_the_fields_defers(payload):
    for bind in binding.FAST_BINDS.values():
        assert bind(payload, INSTANCE, NOW) is None


@pytest.mark.parametrize(
    "text, ok",
    [
        ("{}", True),
        ('{"a":[1,{"b":null}]}', True),
        (" {}", True),
        ("{} ", True),
        ("[]", False),
        ("{", False),
        ('{"a":NaN}', False),
        ('{"a":1}{}', False),
        (nested_json(operations.MAX_JSON_DEPTH), True),
        (nested_json(operations.MAX_JSON_DEPTH + 1), False),
        ('{"é":1}', True),
    ],
)
def test_json_object_ok_agrees_with_the_check(text, ok):
    assert binding.json_object_ok(text) is ok
    try:
        operations.check_json_object_text("data", text)
        checked = True
    except InvalidOperation:
        checked = False
    assert checked is ok
