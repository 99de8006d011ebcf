"""Unit tests of the operation payload rules (protocol/operations.py): plain function calls."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from see_persistence.protocol.errors import CallerError, InvalidOperation, SeePersistenceError
from see_persistence.protocol.operations import (
    INT32_MAX,
    INT32_MIN,
    MAX_ID_CHARS,
    MAX_JSON_CHARS,
    MAX_JSON_DEPTH,
    MAX_NAME_CHARS,
    MAX_PID,
    MAX_TEXT_CHARS,
    MAX_TOKEN_CHARS,
    MIN_TOKEN_CHARS,
    OPERATIONS,
    check_json_object_text,
    check_json_value,
    encode_json_object,
    json_integers_fit,
    validate_operation,
)
from see_persistence.protocol.status import Status
from see_persistence.protocol.timestamps import MAX_TIMESTAMP_US

pytestmark = pytest.mark.unit

AT_US = 1_700_000_000_123_456

# One valid payload per operation, every optional field present.
VALID: dict[str, dict[str, Any]] = {
    "hello": {
        "pid": 4242,
        "process_create_time": 1_700_000_000.25,
        "host": "box",
        "at_us": AT_US,
        "token": "5f0c2b8e9d41a7736e0b1c9d2f4a6e80",
        "host_id": "0b7c4a51-6f0e-4d0a-9d5e-4a1f3c2b1a00/pid:[4026531836]",
    },
    "goodbye": {"at_us": AT_US},
    "create_workflow": {"id": "wf-1", "workflow_name": "nightly", "metadata": "{}", "at_us": AT_US},
    "update_workflow_status": {
        "id": "wf-1",
        "status": "failed",
        "error_message": "boom",
        "at_us": AT_US,
    },
    "create_task": {
        "id": "t-1",
        "workflow_id": "wf-1",
        "task_name": "compile",
        "execution_order": 1,
        "at_us": AT_US,
    },
    "update_task_status": {
        "id": "t-1",
        "status": "completed",
        "output": "ok",
        "error_message": "",
        "at_us": AT_US,
    },
    "append_task_log": {"id": "t-1", "line": "gcc -O2", "at_us": AT_US},
    "audit_event": {
        "id": "ev-1",
        "event_type": "workflow_completed",
        "message": "done",
        "workflow_id": "wf-1",
        "task_id": "t-1",
        "data": '{"n":1}',
        "at_us": AT_US,
    },
    "prune": {
        "id": "prune-1",
        "older_than_us": AT_US - 86_400_000_000,
        "statuses": ["cancelled", "completed"],
        "at_us": AT_US,
    },
}

REQUIRED: list[tuple[str, str]] = [
    (op, field.name) for op, fields in OPERATIONS.items() for field in fields if field.required
]
OPTIONAL: list[tuple[str, str]] = [
    (op, field.name) for op, fields in OPERATIONS.items() for field in fields if not field.required
]


def with_field(op: str, field: str, value: object) -> dict[str, Any]:
    """A copy of the valid payload of `op` with `field` set to `value`."""
    return {**VALID[op], field: value}


def reason_of(name: object, payload: object) -> str:
    """Validate an operation that must be invalid and return its reason."""
    with pytest.raises(InvalidOperation) as info:
        validate_operation(name, payload)
    assert str(info.value) == info.value.reason
    return info.value.reason


def nested_json(depth: int) -> str:
    """JSON text of an object nested `depth` levels deep (the outer object counts)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_valid_payloads_cover_every_operation() -> None:
    assert set(VALID) == set(OPERATIONS)


@pytest.mark.parametrize("op", sorted(VALID))
def test_valid_payload_returns_its_values(op: str) -> None:
    assert validate_operation(op, dict(VALID[op])) == VALID[op]


# --- names and payload shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("drop_table", "unknown operation 'drop_table'"),
        ("", "unknown operation ''"),
        ("HELLO", "unknown operation 'HELLO'"),
        ("x" * 1000, "unknown operation '" + "x" * 64 + "'"),
        (None, "operation name must be a string, got NoneType"),
        (1, "operation name must be a string, got int"),
        (b"hello", "operation name must be a string, got bytes"),
        (["hello"], "operation name must be a string, got list"),
    ],
    ids=["unknown", "empty", "case", "long-truncated", "none", "int", "bytes", "list"],
)
def test_bad_operation_name(name: object, reason: str) -> None:
    assert reason_of(name, {"at_us": AT_US}) == reason


@pytest.mark.parametrize(
    "payload",
    [None, [], [("at_us", AT_US)], "at_us", 5, b"{}"],
    ids=["none", "empty-list", "pairs", "str", "int", "bytes"],
)
def test_payload_must_be_a_map(payload: object) -> None:
    reason = reason_of("goodbye", payload)
    assert reason == f"goodbye: payload must be a map, got {type(payload).__name__}"


@pytest.mark.parametrize(("op", "field"), REQUIRED, ids=[f"{o}.{f}" for o, f in REQUIRED])
def test_missing_required_field(op: str, field: str) -> None:
    payload = {k: v for k, v in VALID[op].items() if k != field}
    assert reason_of(op, payload) == f"{op}: missing field {field!r}"


@pytest.mark.parametrize("op", sorted(VALID))
def test_unexpected_field(op: str) -> None:
    assert reason_of(op, with_field(op, "bogus", 1)) == f"{op}: unexpected fields ['bogus']"


def test_unexpected_fields_are_listed_sorted_and_non_text_keys_reported() -> None:
    payload: dict[Any, Any] = {**VALID["goodbye"], "zz": 1, 7: 2, b"k": 3}
    assert reason_of("goodbye", payload) == "goodbye: unexpected fields ['7', \"b'k'\", 'zz']"


def test_empty_payload_reports_first_missing_field() -> None:
    assert reason_of("create_task", {}) == "create_task: missing field 'id'"


# --- field rules -------------------------------------------------------------------------------

LONE_SURROGATE = "bad \ud800 text"

# (operation, field, value, distinctive part of the reason)
FIELD_RULES: list[tuple[str, str, object, str]] = [
    # names
    ("create_workflow", "workflow_name", "", "workflow_name must not be empty"),
    ("create_workflow", "workflow_name", "   \t", "workflow_name must not be empty"),
    ("create_workflow", "workflow_name", "x" * (MAX_NAME_CHARS + 1), "1025 characters long"),
    ("create_workflow", "workflow_name", 5, "workflow_name must be a string, got int"),
    ("create_workflow", "workflow_name", None, "workflow_name must be a string, got NoneType"),
    ("create_task", "task_name", "", "task_name must not be empty"),
    ("hello", "host", " ", "host must not be empty"),
    # the instance's secret
    (
        "hello",
        "token",
        "t" * (MIN_TOKEN_CHARS - 1),
        "token must be ASCII text of 16 to 128 characters, got 15",
    ),
    (
        "hello",
        "token",
        "t" * (MAX_TOKEN_CHARS + 1),
        "token must be ASCII text of 16 to 128 characters, got 129",
    ),
    ("hello", "token", "é" * 32, "token must be ASCII text of 16 to 128 characters, got 32"),
    ("hello", "token", 12345678901234567890, "token must be a string, got int"),
    ("hello", "token", b"0123456789abcdef", "token must be a string, got bytes"),
    # where its pid means something
    ("hello", "host_id", "", "host_id must not be empty"),
    ("hello", "host_id", "h" * 129, "host_id is 129 characters long; the limit is 128"),
    ("hello", "host_id", 7, "host_id must be a string id, got int"),
    ("audit_event", "event_type", "", "event_type must not be empty"),
    # ids
    ("create_workflow", "id", 5, "id must be a string id, got int"),
    ("create_workflow", "id", None, "id must be a string id, got NoneType"),
    ("create_workflow", "id", b"wf", "id must be a string id, got bytes"),
    ("create_workflow", "id", "", "id must not be empty"),
    ("create_workflow", "id", "  ", "id must not be empty"),
    ("create_workflow", "id", "x" * (MAX_ID_CHARS + 1), "129 characters long; the limit is 128"),
    ("create_task", "workflow_id", "", "workflow_id must not be empty"),
    ("audit_event", "workflow_id", "", "workflow_id must not be empty"),
    ("audit_event", "task_id", 7, "task_id must be a string id, got int"),
    # execution_order
    ("create_task", "execution_order", True, "execution_order must be an integer, got bool"),
    ("create_task", "execution_order", 1.0, "execution_order must be an integer, got float"),
    ("create_task", "execution_order", "1", "execution_order must be an integer, got str"),
    ("create_task", "execution_order", INT32_MAX + 1, "is outside the 32-bit range"),
    ("create_task", "execution_order", INT32_MIN - 1, "is outside the 32-bit range"),
    # at_us
    ("goodbye", "at_us", -1, "at_us=-1 is outside the representable time range"),
    ("goodbye", "at_us", MAX_TIMESTAMP_US + 1, "is outside the representable time range"),
    ("goodbye", "at_us", True, "at_us must be integer microseconds, got bool"),
    ("goodbye", "at_us", 1.5, "at_us must be integer microseconds, got float"),
    ("goodbye", "at_us", None, "at_us must be integer microseconds, got NoneType"),
    # pid
    ("hello", "pid", 0, "pid must be a positive process id, got 0"),
    ("hello", "pid", -3, "pid must be a positive process id, got -3"),
    ("hello", "pid", True, "pid must be a positive process id, got True"),
    ("hello", "pid", MAX_PID + 1, f"pid must be a positive process id, got {MAX_PID + 1}"),
    ("hello", "pid", 12.0, "pid must be a positive process id, got 12.0"),
    # process create time
    ("hello", "process_create_time", math.nan, "process_create_time=nan is not a valid"),
    ("hello", "process_create_time", math.inf, "process_create_time=inf is not a valid"),
    ("hello", "process_create_time", -0.5, "process_create_time=-0.5 is not a valid"),
    ("hello", "process_create_time", -1, "process_create_time=-1 is not a valid"),
    ("hello", "process_create_time", "1.0", "process_create_time must be a number, got str"),
    ("hello", "process_create_time", True, "process_create_time must be a number, got bool"),
    # status
    ("update_workflow_status", "status", "unknown", "unknown status 'unknown'"),
    ("update_task_status", "status", "done", "unknown status 'done'"),
    ("update_task_status", "status", "", "unknown status ''"),
    ("update_task_status", "status", 3, "unknown status 3"),
    ("update_task_status", "status", None, "unknown status None"),
    # JSON object text
    ("create_workflow", "metadata", "not json", "metadata is not valid JSON"),
    ("create_workflow", "metadata", "", "metadata is not valid JSON"),
    ("create_workflow", "metadata", '{"a":1', "metadata is not valid JSON"),
    ("create_workflow", "metadata", "[1, 2]", "metadata must be a JSON object, got list"),
    ("create_workflow", "metadata", '"text"', "metadata must be a JSON object, got str"),
    ("create_workflow", "metadata", "null", "metadata must be a JSON object, got NoneType"),
    ("create_workflow", "metadata", {"a": 1}, "metadata must be JSON text, got dict"),
    ("create_workflow", "metadata", None, "metadata must be JSON text, got NoneType"),
    (
        "create_workflow",
        "metadata",
        nested_json(MAX_JSON_DEPTH + 1),
        "metadata nests 65 levels deep; the limit is 64",
    ),
    (
        "audit_event",
        "data",
        "[" * 100_000 + "]" * 100_000,
        "data nests 100000 levels deep",
    ),
    (
        "audit_event",
        "data",
        json.dumps({"k": "x" * MAX_JSON_CHARS}),
        "characters of JSON; the limit is 1048576",
    ),
    # text
    ("append_task_log", "line", 5, "line must be a string, got int"),
    ("append_task_log", "line", None, "line must be a string, got NoneType"),
    ("append_task_log", "line", "x" * (MAX_TEXT_CHARS + 1), "1048577 characters long"),
    ("update_task_status", "output", 5, "output must be a string, got int"),
    ("update_task_status", "output", "x" * (MAX_TEXT_CHARS + 1), "1048577 characters long"),
    ("update_workflow_status", "error_message", b"x", "error_message must be a string, got bytes"),
    ("audit_event", "message", ["m"], "message must be a string, got list"),
    # text with a lone surrogate (cannot be stored as UTF-8)
    ("create_workflow", "workflow_name", LONE_SURROGATE, "workflow_name contains text that is not"),
    ("create_workflow", "id", LONE_SURROGATE, "id contains text that is not valid Unicode"),
    ("hello", "host", LONE_SURROGATE, "host contains text that is not valid Unicode"),
    ("append_task_log", "line", LONE_SURROGATE, "line contains text that is not valid Unicode"),
    ("audit_event", "message", "\udfff", "message contains text that is not valid Unicode"),
    ("audit_event", "task_id", LONE_SURROGATE, "task_id contains text that is not valid"),
    ("update_task_status", "output", LONE_SURROGATE, "output contains text that is not valid"),
    (
        "update_workflow_status",
        "error_message",
        LONE_SURROGATE,
        "error_message contains text that is not valid Unicode",
    ),
]


@pytest.mark.parametrize(
    ("op", "field", "value", "reason"),
    FIELD_RULES,
    ids=[f"{op}.{field}-{i}" for i, (op, field, _, _) in enumerate(FIELD_RULES)],
)
def test_field_rule(op: str, field: str, value: object, reason: str) -> None:
    full = reason_of(op, with_field(op, field, value))
    assert full.startswith(f"{op}: ")
    assert reason in full


def test_unknown_status_lists_the_allowed_values() -> None:
    reason = reason_of("update_task_status", with_field("update_task_status", "status", "x"))
    assert reason.endswith("expected one of pending, running, completed, failed, cancelled")


def test_long_reasons_stay_one_line() -> None:
    reason = reason_of("create_workflow", with_field("create_workflow", "metadata", "{\n\n"))
    assert "\n" not in reason


# (operation, field, value accepted at the limit, value returned)
ACCEPTED_LIMITS: list[tuple[str, str, object, object]] = [
    ("create_task", "execution_order", INT32_MIN, INT32_MIN),
    ("create_task", "execution_order", INT32_MAX, INT32_MAX),
    ("create_task", "execution_order", -1, -1),
    ("goodbye", "at_us", 0, 0),
    ("goodbye", "at_us", MAX_TIMESTAMP_US, MAX_TIMESTAMP_US),
    ("hello", "pid", 1, 1),
    ("hello", "pid", MAX_PID, MAX_PID),
    ("hello", "process_create_time", 0, 0.0),
    ("hello", "process_create_time", 12, 12.0),
    ("hello", "token", "t" * MIN_TOKEN_CHARS, "t" * MIN_TOKEN_CHARS),
    ("hello", "token", "t" * MAX_TOKEN_CHARS, "t" * MAX_TOKEN_CHARS),
    ("create_workflow", "id", "x" * MAX_ID_CHARS, "x" * MAX_ID_CHARS),
    ("create_workflow", "workflow_name", "n" * MAX_NAME_CHARS, "n" * MAX_NAME_CHARS),
    ("create_workflow", "workflow_name", " padded ", " padded "),
    ("append_task_log", "line", "", ""),
    ("append_task_log", "line", "l" * MAX_TEXT_CHARS, "l" * MAX_TEXT_CHARS),
    ("create_workflow", "metadata", nested_json(MAX_JSON_DEPTH), nested_json(MAX_JSON_DEPTH)),
    (
        "create_workflow",
        "metadata",
        '{"a":"[[[[' + "[" * 100 + '"}',
        '{"a":"[[[[' + "[" * 100 + '"}',
    ),
    ("create_workflow", "metadata", ' {"a": [1, {"b": null}]} ', ' {"a": [1, {"b": null}]} '),
]


@pytest.mark.parametrize(
    ("op", "field", "value", "expected"),
    ACCEPTED_LIMITS,
    ids=[f"{op}.{field}-{i}" for i, (op, field, _, _) in enumerate(ACCEPTED_LIMITS)],
)
def test_field_accepts_limit(op: str, field: str, value: object, expected: object) -> None:
    result = validate_operation(op, with_field(op, field, value))[field]
    assert result == expected
    assert type(result) is type(expected)


def test_huge_integer_create_time_is_invalid() -> None:
    reason = reason_of("hello", with_field("hello", "process_create_time", 10**400))
    assert "process_create_time" in reason


@pytest.mark.parametrize("text", ['{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}'])
def test_json_object_text_rejects_non_finite_numbers(text: str) -> None:
    assert "metadata" in reason_of("create_workflow", with_field("create_workflow", "metadata", text))


def test_json_object_text_rejects_lone_surrogate() -> None:
    text = '{"a":"' + LONE_SURROGATE + '"}'
    reason = reason_of("create_workflow", with_field("create_workflow", "metadata", text))
    assert "metadata contains text that is not valid Unicode" in reason


# --- optional fields, normalisation, pass-through ----------------------------------------------

WITH_OPTIONAL_FIELDS = sorted({op for op, _ in OPTIONAL})


@pytest.mark.parametrize("op", WITH_OPTIONAL_FIELDS)
def test_absent_optional_fields_come_back_as_none(op: str) -> None:
    optional = {f.name for f in OPERATIONS[op] if not f.required}
    payload = {k: v for k, v in VALID[op].items() if k not in optional}
    values = validate_operation(op, payload)
    assert set(values) == {f.name for f in OPERATIONS[op]}
    assert all(values[name] is None for name in optional)
    assert {k: values[k] for k in payload} == payload


@pytest.mark.parametrize("op", WITH_OPTIONAL_FIELDS)
def test_extra_field_is_rejected_when_optional_fields_are_absent(op: str) -> None:
    optional = {f.name for f in OPERATIONS[op] if not f.required}
    payload = {k: v for k, v in VALID[op].items() if k not in optional}
    assert reason_of(op, {**payload, "bogus": None}) == f"{op}: unexpected fields ['bogus']"


@pytest.mark.parametrize(("op", "field"), OPTIONAL, ids=[f"{o}.{f}" for o, f in OPTIONAL])
def test_optional_field_may_be_none(op: str, field: str) -> None:
    assert validate_operation(op, with_field(op, field, None))[field] is None


def test_validate_does_not_modify_the_payload() -> None:
    payload = with_field("update_task_status", "status", "RUNNING")
    snapshot = dict(payload)
    assert validate_operation("update_task_status", payload)["status"] == "running"
    assert payload == snapshot


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("RUNNING", "running"),
        ("Completed", "completed"),
        (" failed\n", "failed"),
        ("cancelled", "cancelled"),
        (Status.PENDING, "pending"),
        (Status.CANCELLED, "cancelled"),
    ],
)
@pytest.mark.parametrize("op", ["update_workflow_status", "update_task_status"])
def test_status_text_is_normalised(op: str, given: object, expected: str) -> None:
    status = validate_operation(op, with_field(op, "status", given))["status"]
    assert status == expected
    assert type(status) is str


UNCHANGED_TEXT = [
    "a\x00b",
    "\x00",
    "'; DROP TABLE workflow_executions; --",
    'Robert"); DELETE FROM task_executions WHERE ("1"="1',
    "%s %d {0} $1 ?",
    "line\nbreak\r\n\ttab",
    "émoji 🚀 and ‮ RTL",
    "\ufeff BOM",
]


@pytest.mark.parametrize("text", UNCHANGED_TEXT)
@pytest.mark.parametrize(
    ("op", "field"),
    [
        ("create_workflow", "workflow_name"),
        ("create_workflow", "id"),
        ("append_task_log", "line"),
        ("audit_event", "message"),
        ("update_task_status", "output"),
        ("update_workflow_status", "error_message"),
    ],
)
def test_text_passes_unchanged(op: str, field: str, text: str) -> None:
    assert validate_operation(op, with_field(op, field, text))[field] == text


@pytest.mark.parametrize("text", UNCHANGED_TEXT)
def test_json_text_with_odd_strings_passes_unchanged(text: str) -> None:
    metadata = json.dumps({"note": text}, ensure_ascii=False)
    values = validate_operation("create_workflow", with_field("create_workflow", "metadata", metadata))
    assert values["metadata"] == metadata


# --- encode_json_object ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "{}"),
        ({}, "{}"),
        ({"branch": "main"}, '{"branch":"main"}'),
        ({"n": 1, "list": [1, 2.5, None, True]}, '{"n":1,"list":[1,2.5,null,true]}'),
        ({"nested": {"a": {"b": []}}}, '{"nested":{"a":{"b":[]}}}'),
        ({"é": "🚀"}, '{"é":"🚀"}'),
        ({"nul": "a\x00b"}, '{"nul":"a\\u0000b"}'),
        (
            {"12": "a key of digits", "true": 1, "null": 2, "": 3},
            '{"12":"a key of digits","true":1,"null":2,"":3}',
        ),
    ],
    ids=["none", "empty", "simple", "mixed", "nested", "non-ascii", "nul", "keys-like-json-words"],
)
def test_encode_json_object(value: object, expected: str) -> None:
    text = encode_json_object("metadata", value)
    assert text == expected
    assert validate_operation("create_workflow", with_field("create_workflow", "metadata", text))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "metadata must be a dict, got list"),
        ("{}", "metadata must be a dict, got str"),
        (5, "metadata must be a dict, got int"),
        ({"s": {1, 2}}, "metadata is not JSON"),
        ({"f": math.nan}, "metadata is not JSON"),
        ({"f": math.inf}, "metadata is not JSON"),
        ({"b": b"bytes"}, "metadata is not JSON"),
        ({(1, 2): "tuple key"}, "metadata has a key (1, 2) of type tuple; JSON object keys must be strings"),
        ({"big": "x" * MAX_JSON_CHARS}, "characters of JSON; the limit is 1048576"),
        ({"k": "\ud800"}, "metadata contains text that is not valid Unicode"),
    ],
    ids=[
        "list",
        "str",
        "int",
        "set",
        "nan",
        "inf",
        "bytes",
        "tuple-key",
        "too-long",
        "surrogate",
    ],
)
def test_encode_json_object_rejects(value: object, reason: str) -> None:
    with pytest.raises(InvalidOperation) as info:
        encode_json_object("metadata", value)
    assert reason in info.value.reason


def test_encode_json_object_rejects_deep_nesting() -> None:
    value: dict[str, Any] = {}
    for _ in range(MAX_JSON_DEPTH):
        value = {"a": value}
    with pytest.raises(InvalidOperation, match="nests 65 levels deep"):
        encode_json_object("data", value)


def test_encode_json_object_rejects_recursion() -> None:
    value: dict[str, Any] = {}
    value["self"] = value
    with pytest.raises(InvalidOperation, match="data is not JSON"):
        encode_json_object("data", value)


def test_encode_json_object_rejects_nesting_beyond_the_recursion_limit() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InvalidOperation, match="data is not JSON"):
        encode_json_object("data", {"deep": value})


# --- JSON the Rust core reads exactly: string keys, 64-bit integers ----------------------------

I64_MIN, U64_MAX = -(2**63), 2**64 - 1


def encode_reason(field: str, value: object) -> str:
    """encode_json_object on a value it must refuse; the reason."""
    with pytest.raises(InvalidOperation) as info:
        encode_json_object(field, value)
    return info.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1: "a"}, "metadata has a key 1 of type int; JSON object keys must be strings"),
        ({"a": {2.5: 1}}, 'metadata["a"] has a key 2.5 of type float; JSON object keys must be strings'),
        ({None: 1}, "metadata has a key None of type NoneType; JSON object keys must be strings"),
        ({True: 1}, "metadata has a key True of type bool; JSON object keys must be strings"),
        ({False: 1}, "metadata has a key False of type bool; JSON object keys must be strings"),
        ({-7: 1}, "metadata has a key -7 of type int; JSON object keys must be strings"),
        ({1e16: 1}, "metadata has a key 1e+16 of type float; JSON object keys must be strings"),
        ({"ok": 1, 3: "x"}, "metadata has a key 3 of type int; JSON object keys must be strings"),
        # "1" and 1 would both become the key "1": the refusal also stops that clash
        ({"1": "a", 1: "b"}, "metadata has a key 1 of type int; JSON object keys must be strings"),
        (
            {"l": [0, {"m": {None: 1}}]},
            'metadata["l"][1]["m"] has a key None of type NoneType; JSON object keys must be strings',
        ),
        (
            {"huge": 2**70 + 1},
            'metadata["huge"] is 1180591620717411303425, outside the 64-bit range'
            " the Rust core reads exactly",
        ),
        ({"a": U64_MAX + 1}, 'metadata["a"] is 18446744073709551616, outside the 64-bit range'),
        ({"a": I64_MIN - 1}, 'metadata["a"] is -9223372036854775809, outside the 64-bit range'),
        ({"a": [1, [2, -(10**30)]]}, 'metadata["a"][1][1] is -1000000000000000000000000000000, outside'),
        ({"a": (1, 10**20)}, 'metadata["a"][1] is 100000000000000000000, outside the 64-bit range'),
        ({"é\n": {"k": 10**19 * 2}}, 'metadata["é\\n"]["k"] is 20000000000000000000, outside'),
        # an integer too long for str(): the encoder refuses it; the reason still names it
        ({"x": 10**5000}, 'metadata["x"] is a 16610-bit integer, outside the 64-bit range'),
    ],
    ids=[
        "int-key",
        "nested-float-key",
        "none-key",
        "true-key",
        "false-key",
        "negative-key",
        "exponent-key",
        "second-key",
        "clashing-keys",
        "deep-none-key",
        "huge",
        "u64-max-plus-one",
        "i64-min-minus-one",
        "in-nested-list",
        "in-tuple",
        "after-non-ascii-key",
        "beyond-str-digits",
    ],
)
def test_encode_json_object_refuses_what_the_rust_core_cannot_read(value: object, reason: str) -> None:
    refused = encode_reason("metadata", value)
    assert refused.startswith(reason)
    assert "\n" not in refused


def test_encode_json_object_names_the_field_it_was_given() -> None:
    assert encode_reason("data", {"n": {7: 1}}).startswith('data["n"] has a key 7 of type int')


def test_a_refused_key_or_integer_is_a_caller_error() -> None:
    with pytest.raises(CallerError):
        encode_json_object("metadata", {1: "a"})
    with pytest.raises(CallerError):
        encode_json_object("metadata", {"a": 2**64})


@pytest.mark.parametrize(
    "value",
    [
        {"a": U64_MAX, "b": I64_MIN, "c": 2**63 - 1, "d": 2**63, "e": -1, "f": 0},
        {"ns": 1_700_000_000_123_456_789, "list": [9_223_372_036_854_775_807]},
        {"id": "12345678901234567890123456789", "t": "1" * 1000},
        {"float": 1.2345678901234567e300, "small": 0.00012345678901234568, "neg": -1e-300},
        {"big float": float(2**70), "as text": str(2**200)},
        {"12": 1, "-1.5e+3": 2, "true": 3, "false": 4, "null": 5, "": 6, "e": 7, "v2": 8},
        {"k": {"nested": {"12": [{"true": None}]}}},
        {"bools": [True, False], "none": None},
    ],
    ids=[
        "boundaries",
        "nanoseconds",
        "digits-in-strings",
        "floats",
        "big-float",
        "word-keys",
        "nested",
        "bools",
    ],
)
def test_encode_json_object_accepts_what_the_rust_core_reads(value: dict[str, Any]) -> None:
    text = encode_json_object("metadata", value)
    assert json.loads(text) == value
    assert validate_operation("create_workflow", with_field("create_workflow", "metadata", text))


def test_encode_json_object_explaining_an_error_stays_linear_on_shared_values() -> None:
    shared: list[Any] = [{1, 2}]
    for _ in range(80):
        shared = [shared, shared]  # 2**80 paths to the set; a walk must not take them all
    assert encode_reason("data", {"a": shared}).startswith("data is not JSON")
    cyclic: list[Any] = []
    cyclic.extend([cyclic, cyclic])
    assert encode_reason("data", {"c": cyclic}).startswith("data is not JSON")


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ((10**5000,), "<tuple>"),
        (_Unprintable(), "<_Unprintable>"),
        (tuple(range(100)), repr(tuple(range(100)))[:64] + "..."),
    ],
    ids=["int-too-long-for-repr", "repr-raises", "long"],
)
def test_a_key_that_cannot_be_shown_whole_is_cut_short_or_named_by_its_type(key: object, shown: str) -> None:
    assert encode_reason("data", {key: 1}) == (
        f"data has a key {shown} of type {type(key).__name__}; JSON object keys must be strings"
    )


def test_a_lone_surrogate_in_a_key_path_keeps_the_reason_storable() -> None:
    # The encoder refuses the integer (too long for str()) before the text is checked for
    # surrogates; the reason names the path to it and must itself be valid Unicode.
    reason = encode_reason("data", {"k\ud800": {"x": 10**5000}})
    reason.encode("utf-8")
    assert reason.startswith('data["k\\ud800"]["x"] is a 16610-bit integer, outside the 64-bit range')


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"huge": 1180591620717411303425}', 'metadata["huge"] is 1180591620717411303425, outside'),
        ('{"a": 18446744073709551616}', 'metadata["a"] is 18446744073709551616, outside the 64-bit'),
        ('{"a": [1, {"b": -9223372036854775809}]}', 'metadata["a"][1]["b"] is -9223372036854775809'),
        ('{\n  "a" : [ 0 ] , "b":1' + "0" * 30 + "}", 'metadata["b"] is 1' + "0" * 30 + ", outside"),
    ],
    ids=["huge", "u64-max-plus-one", "nested-i64-min-minus-one", "spaced"],
)
def test_json_object_text_refuses_integers_beyond_64_bits(text: str, reason: str) -> None:
    full = reason_of("create_workflow", with_field("create_workflow", "metadata", text))
    assert full.startswith(f"create_workflow: {reason}")
    assert not json_integers_fit(text, json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 18446744073709551615, "b": -9223372036854775808}',
        '{"id": "123456789012345678901234567890"}',
        '{"f": 123456789012345678901234.5, "e": 1e30, "g": 0.00012345678901234568}',
        '{"12": 1, "true": 2}',
    ],
    ids=["boundaries", "digits-in-a-string", "floats", "word-keys"],
)
def test_json_object_text_accepts_what_the_rust_core_reads(text: str) -> None:
    assert validate_operation("audit_event", with_field("audit_event", "data", text))["data"] == text
    assert json_integers_fit(text, json.loads(text))


# Values JSON can carry, with the integers and keys that matter here made likely.
_EDGES = [I64_MIN, -(10**18), 2**63, 10**19, U64_MAX]  # the range's ends; where 19 and 20 digits begin
_INTS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(_EDGES).flatmap(lambda edge: st.integers(edge - 2, edge + 2)),
    st.integers(min_value=-(10**19) + 1, max_value=I64_MIN - 1),  # out of range with only 19 digits
)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_WORDS = st.sampled_from(["12", "-1", "2.5", "1e+16", "true", "false", "null", "", "e", "v2", "k0", "a1b2"])
_TEXT = st.one_of(st.text(max_size=8), _WORDS, st.integers(10**16, 10**22).map(str))
_NON_TEXT_KEYS = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65), _FLOATS, st.booleans(), st.none()
)
# One key in ten is not text: one in a value is enough to walk it, which hides the rest.
_KEYS = st.integers(0, 9).flatmap(lambda n: _NON_TEXT_KEYS if n == 0 else _TEXT)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT)


def _json_like(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    values = st.recursive(
        _SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(keys, inner, max_size=4),
        ),
        max_leaves=12,
    )
    return st.dictionaries(keys, values, max_size=5)


# The strategies above make the cases the prefilters decide on likely (edge integers, numeric
# and word keys, non-text keys), so a few hundred examples reach each of them many times over.
PREFILTER_EXAMPLES = 300


def _outcome(check: Callable[[], object]) -> str | None:
    try:
        check()
    except InvalidOperation as exc:
        return exc.reason
    return None


@pytest.mark.slow
@settings(max_examples=PREFILTER_EXAMPLES, deadline=None)
@given(value=_json_like(_KEYS))
def test_prefiltered_encode_agrees_with_a_full_walk(value: dict[Any, Any]) -> None:
    walked = _outcome(lambda: check_json_value("metadata", value))
    encoded = _outcome(lambda: encode_json_object("metadata", value))
    assert encoded == walked
    if walked is None:
        assert encode_json_object("metadata", value) == json.dumps(
            value, ensure_ascii=False, separators=(",", ":")
        )


@pytest.mark.slow
@settings(max_examples=PREFILTER_EXAMPLES, deadline=None)
@given(value=_json_like(_TEXT), indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_prefiltered_text_check_agrees_with_a_full_walk(
    value: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    walked = _outcome(lambda: check_json_value("data", json.loads(text)))
    checked = _outcome(lambda: check_json_object_text("data", text))
    assert checked == walked
    assert json_integers_fit(text, json.loads(text)) is (walked is None)


# --- the error type ----------------------------------------------------------------------------


def test_invalid_operation_is_a_value_error() -> None:
    with pytest.raises(ValueError) as info:
        validate_operation("goodbye", {})
    error = info.value
    assert isinstance(error, InvalidOperation)
    assert isinstance(error, CallerError)
    assert isinstance(error, SeePersistenceError)
    assert error.reason == "goodbye: missing field 'at_us'"


@pytest.mark.parametrize(
    ("statuses", "reason"),
    [
        ([], "non-empty list"),
        ("completed", "non-empty list"),
        (["running"], "a running workflow is never pruned"),
        (["completed", "pending"], "a pending workflow is never pruned"),
        (["done"], "unknown status 'done'"),
        ([7], "unknown status 7"),
    ],
)
def test_prune_statuses_must_be_finished_ones(statuses: object, reason: str) -> None:
    with pytest.raises(InvalidOperation, match=reason):
        validate_operation("prune", with_field("prune", "statuses", statuses))


def test_prune_statuses_are_normalised() -> None:
    values = validate_operation("prune", with_field("prune", "statuses", ["FAILED", "completed", "failed"]))
    assert values["statuses"] == ["completed", "failed"]


def test_a_hello_without_a_token_is_a_client_older_than_tokens() -> None:
    """The token is optional: such a hello registers an instance without one (version 1 messages)."""
    payload = {k: v for k, v in VALID["hello"].items() if k != "token"}
    assert validate_operation("hello", payload)["token"] is None
