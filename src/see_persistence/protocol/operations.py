"""The operations a client sends and the rules of their payloads.

Each operation is a name and a map of fields. `OPERATIONS` lists every operation's fields
and their kinds; `validate_operation` checks a payload against it and returns the values
the writer binds to its SQL. The same field checks run in the calling process (so a
caller's mistake raises at once) and in the writer (so a peer's bad payload becomes a
dead-letter reason).

JSON objects (metadata, data) must be readable exactly by the app's Rust core, whose
serde_json has no arbitrary_precision: object keys are strings (Python would turn 1, 2.5,
None or True into the strings "1", "2.5", "null", "true") and integers lie within
[-2**63, 2**64 - 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidOperation
from .status import FINISHED_STATUSES, Status
from .timestamps import MAX_TIMESTAMP_US

MAX_ID_CHARS = 128
MAX_NAME_CHARS = 1024
MAX_TEXT_CHARS = 1_048_576
MAX_JSON_CHARS = 1_048_576
MAX_JSON_DEPTH = 64
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # the Rust core reads execution_order as i32
# The integers the Rust core's serde_json reads exactly: i64 and u64 (no arbitrary_precision).
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1
MAX_PID = 2**31 - 1
# An instance's secret (the Client's is secrets.token_hex(16): 32 characters). At least 16
# characters, so that nothing as short as a guessable word passes for one.
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 128

HELLO = "hello"
GOODBYE = "goodbye"
CREATE_WORKFLOW = "create_workflow"
UPDATE_WORKFLOW_STATUS = "update_workflow_status"
CREATE_TASK = "create_task"
UPDATE_TASK_STATUS = "update_task_status"
APPEND_TASK_LOG = "append_task_log"
AUDIT_EVENT = "audit_event"
PRUNE = "prune"


def check_id(field: str, value: object) -> str:
    """Return `value` if it is a usable record id (non-empty text, at most MAX_ID_CHARS)."""
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isascii() and not value.isspace():
        return value  # the writer checks every field of every operation: keep the usual case short
    if not isinstance(value, str):
        raise InvalidOperation(f"{field} must be a string id, got {type(value).__name__}")
    if not value or value.isspace():
        raise InvalidOperation(f"{field} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidOperation(f"{field} is {len(value)} characters long; the limit is {MAX_ID_CHARS}")
    _check_encodable(field, value)
    return value


def check_name(field: str, value: object) -> str:
    """Return `value` if it is a non-blank name of at most MAX_NAME_CHARS characters."""
    if type(value) is str and 0 < len(value) <= MAX_NAME_CHARS and value.isascii() and not value.isspace():
        return value
    if not isinstance(value, str):
        raise InvalidOperation(f"{field} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidOperation(f"{field} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidOperation(f"{field} is {len(value)} characters long; the limit is {MAX_NAME_CHARS}")
    _check_encodable(field, value)
    return value


def check_text(field: str, value: object) -> str:
    """Return `value` if it is text of at most MAX_TEXT_CHARS characters (empty allowed)."""
    if type(value) is str and len(value) <= MAX_TEXT_CHARS and value.isascii():
        return value
    if not isinstance(value, str):
        raise InvalidOperation(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidOperation(f"{field} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    _check_encodable(field, value)
    return value


def check_optional_text(field: str, value: object) -> str | None:
    """Like check_text, but None passes through."""
    return None if value is None else check_text(field, value)


def check_optional_id(field: str, value: object) -> str | None:
    """Like check_id, but None passes through."""
    return None if value is None else check_id(field, value)


def check_int32(field: str, value: object) -> int:
    """Return `value` if it is an integer that fits the Rust core's i32."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOperation(f"{field} must be an integer, got {type(value).__name__}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise InvalidOperation(f"{field}={value} is outside the 32-bit range")
    return value


def check_timestamp_us(field: str, value: object) -> int:
    """Return `value` if it is microseconds since the Unix epoch within RFC 3339's range."""
    if type(value) is int and 0 <= value <= MAX_TIMESTAMP_US:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOperation(f"{field} must be integer microseconds, got {type(value).__name__}")
    if not 0 <= value <= MAX_TIMESTAMP_US:
        raise InvalidOperation(f"{field}={value} is outside the representable time range")
    return value


def check_pid(field: str, value: object) -> int:
    """Return `value` if it is a positive process id."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PID:
        raise InvalidOperation(f"{field} must be a positive process id, got {value!r}")
    return value


def check_create_time(field: str, value: object) -> float:
    """Return `value` as a float if it is a finite, non-negative process create time."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOperation(f"{field} must be a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite or value < 0:
        raise InvalidOperation(f"{field}={value!r} is not a valid create time")
    return float(value)


def check_token(field: str, value: object) -> str:
    """Return `value` if it is an instance token: ASCII text of 16 to 128 characters."""
    if type(value) is str and MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS and value.isascii():
        return value
    if not isinstance(value, str):
        raise InvalidOperation(f"{field} must be a string, got {type(value).__name__}")
    raise InvalidOperation(
        f"{field} must be ASCII text of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters,"
        f" got {len(value)} characters"
    )


def check_optional_token(field: str, value: object) -> str | None:
    """Like check_token, but None passes through (the hello of a client older than tokens)."""
    return None if value is None else check_token(field, value)


def check_status(field: str, value: object) -> str:
    """Return the lowercase status text for `value` (a Status or its text)."""
    try:
        return Status.parse(value).value
    except ValueError as exc:
        raise InvalidOperation(f"{field}: {exc}") from None


def check_prunable_statuses(field: str, value: object) -> list[str]:
    """Return the finished statuses to prune, lowercase; pending and running are refused."""
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidOperation(f"{field} must be a non-empty list of statuses")
    allowed = ", ".join(s.value for s in FINISHED_STATUSES)
    statuses = []
    for item in value:
        try:
            status = Status.parse(item)
        except ValueError as exc:
            raise InvalidOperation(f"{field}: {exc}") from None
        if status not in FINISHED_STATUSES:
            raise InvalidOperation(f"{field}: a {status.value} workflow is never pruned; use {allowed}")
        statuses.append(status.value)
    return sorted(set(statuses))


def encode_json_object(field: str, value: object) -> str:
    """Encode a caller's mapping as JSON text the Rust core reads exactly; None becomes '{}'."""
    if value is None:
        return "{}"
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            raise InvalidOperation(f"{field} must be a dict, got {type(value).__name__}")
        value = dict(value)
    if not value:
        return "{}"
    try:
        text = _encode_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        # A non-string key or an integer too long to print may be behind it: name it if so.
        found = _find_unreadable(value, 0, set())
        if found is not None:
            raise InvalidOperation(_unreadable_reason(field, found)) from None
        raise InvalidOperation(f"{field} is not JSON: {exc}") from None
    if len(text) > MAX_JSON_CHARS:
        raise InvalidOperation(f"{field} is {len(text)} characters of JSON; the limit is {MAX_JSON_CHARS}")
    try:
        scan = text.encode().translate(_SCAN_TABLE).decode("latin-1")
    except UnicodeEncodeError:
        raise InvalidOperation(f"{field} contains text that is not valid Unicode") from None
    if len(text) > MAX_JSON_DEPTH and scan.count("{") > MAX_JSON_DEPTH:
        _check_json_depth(field, text)
    # The prefilter: a few C-level scans of the text instead of a walk of the value in Python.
    # Only an integer of 19 or more digits can be out of range (i64's limits have 19 digits,
    # u64's 20). A key made from None or a bool is "null", "true" or "false", and one made
    # from a number ends in a digit before '":' (1 -> "1":, 2.5 -> "2.5":, 1e16 -> "1e+16":);
    # as a key like "v2" ends so too, such text is looked at again with every character a
    # number can hold deleted: a number's key is then left as "":. A false alarm (a digit run
    # inside a string, a time in ns, a key like "12") costs only the walk, which accepts it.
    if (
        "0000000000000000000" in scan
        or '"true":' in text
        or '"false":' in text
        or '"null":' in text
        or ('0":' in scan and '"":' in text.encode().translate(None, b"0123456789+-.e").decode("latin-1"))
    ):
        check_json_value(field, value)
    return text


def check_json_object_text(field: str, value: object) -> str:
    """Return `value` if it is JSON text of an object within the limits that the Rust core reads exactly."""
    if not isinstance(value, str):
        raise InvalidOperation(f"{field} must be JSON text, got {type(value).__name__}")
    if value == "{}":
        return value
    if len(value) > MAX_JSON_CHARS:
        raise InvalidOperation(f"{field} is {len(value)} characters of JSON; the limit is {MAX_JSON_CHARS}")
    try:
        scan = value.encode().translate(_SCAN_TABLE).decode("latin-1")
    except UnicodeEncodeError:
        raise InvalidOperation(f"{field} contains text that is not valid Unicode") from None
    if len(value) > MAX_JSON_DEPTH and scan.count("{") > MAX_JSON_DEPTH:
        _check_json_depth(field, value)  # before decoding: the decoder recurses
    try:
        parsed = _JSON_DECODER.decode(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidOperation(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidOperation(f"{field} must be a JSON object, got {type(parsed).__name__}")
    # Decoded keys are strings: only an integer can be unreadable, and only one of 19+ digits.
    if "0000000000000000000" in scan:
        check_json_value(field, parsed)
    return value


def json_integers_fit(text: str, value: object) -> bool:
    """True unless `value`, decoded from the JSON `text`, holds an integer outside 64 bits."""
    scan = text.encode("utf-8", "surrogatepass").translate(_SCAN_TABLE).decode("latin-1")
    return "0000000000000000000" not in scan or _find_unreadable(value, 0) is None


def check_json_value(field: str, value: object) -> None:
    """Walk `value` fully; raise InvalidOperation at a non-string key or an integer outside 64 bits."""
    found = _find_unreadable(value, 0)
    if found is not None:
        raise InvalidOperation(_unreadable_reason(field, found))


# The text the prefilter scans: UTF-8 with every ASCII digit made "0" (so that one substring
# test finds a run of digits) and "[" made "{" (so that one count bounds the nesting depth).
# Multi-byte characters stay bytes >= 0x80; decoding as Latin-1 gives a str back, because a
# substring test on bytes is slow in CPython (it first tries the needle as an int).
_SCAN_TABLE = bytes(
    ord("0") if chr(i).isdigit() and i < 0x80 else ord("{") if i == ord("[") else i for i in range(256)
)


# Where the walk found something unreadable: the path (outermost first) and what it found.
_Found = tuple[list[object], str]


def _find_unreadable(value: object, depth: int, seen: set[int] | None = None) -> _Found | None:
    # Text the encoder wrote bounds the walk; explaining an encoder's error, depth and `seen`
    # (every container walked once) bound it instead: the value may be cyclic or shared.
    if isinstance(value, dict):
        if depth > MAX_JSON_DEPTH or (seen is not None and _seen_before(seen, value)):
            return None
        for key, item in value.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                return [], f"has a key {_show(key)} of type {kind}; JSON object keys must be strings"
            if isinstance(item, (dict, list, tuple, int)):
                found = _find_unreadable(item, depth + 1, seen)
                if found is not None:
                    found[0].insert(0, key)
                    return found
    elif isinstance(value, (list, tuple)):
        if depth > MAX_JSON_DEPTH or (seen is not None and _seen_before(seen, value)):
            return None
        for index, item in enumerate(value):
            if isinstance(item, (dict, list, tuple, int)):
                found = _find_unreadable(item, depth + 1, seen)
                if found is not None:
                    found[0].insert(0, index)
                    return found
    elif isinstance(value, int) and not isinstance(value, bool) and not JSON_INT_MIN <= value <= JSON_INT_MAX:
        return [], f"is {_show(value)}, outside the 64-bit range the Rust core reads exactly"
    return None


def _seen_before(seen: set[int], container: object) -> bool:
    if id(container) in seen:
        return True
    seen.add(id(container))
    return False


def _unreadable_reason(field: str, found: _Found) -> str:
    path, what = found
    steps = "".join(f"[{step}]" if isinstance(step, int) else f"[{_show_key(str(step))}]" for step in path)
    return f"{field}{steps} {what}"


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"  # str() refuses past 4300 digits
    try:
        text = repr(value)
    except Exception:  # a key of the caller's own type, or holding an int too long for str()
        return f"<{type(value).__name__}>"
    return text if len(text) <= 64 else text[:64] + "..."


def _show_key(key: str) -> str:
    text = json.dumps(key if len(key) <= 64 else key[:64] + "...", ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: keep the reason storable
            text = json.dumps(key[:64], ensure_ascii=True)
    return text


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259); the Rust core's serde_json refuses them.
    raise ValueError(f"{name} is not a JSON number")


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder, not one per call
# json.dumps with options builds a new encoder on every call; a caller pays for each one.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _not_json(value: object) -> None:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_json_encoder() -> Callable[[dict[str, Any]], str]:
    # Even a kept JSONEncoder builds its C encoder anew inside every encode() call, which is
    # two thirds of the cost for a small dict; CPython's C encoder can be built once and kept.
    make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_c_encoder is None:  # another Python, or CPython without its _json accelerator
        return _JSON_ENCODER.encode
    # markers=None: no cycle bookkeeping; a cyclic value ends in RecursionError, refused below.
    c_encoder = make_c_encoder(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: dict[str, Any]) -> str:
        return "".join(c_encoder(value, 0))

    return encode


_encode_json = _make_json_encoder()


def _check_json_depth(field: str, text: str) -> None:
    # Counting brackets outside strings is cheap and stops a deeply nested value before
    # json.loads recurses into it; a bracket inside a string can only overestimate depth.
    # Text no longer than the limit cannot hold more brackets than that (most payloads).
    if len(text) <= MAX_JSON_DEPTH or text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise InvalidOperation(f"{field} nests {deepest} levels deep; the limit is {MAX_JSON_DEPTH}")


def _check_encodable(field: str, value: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidOperation(f"{field} contains text that is not valid Unicode") from None


Check = Callable[[str, object], Any]


@dataclass(frozen=True)
class Field:
    """One field of an operation payload: its name, its check, and whether it must be present."""

    name: str
    check: Check
    required: bool = True


_AT = Field("at_us", check_timestamp_us)

OPERATIONS: dict[str, tuple[Field, ...]] = {
    HELLO: (
        Field("pid", check_pid),
        Field("process_create_time", check_create_time),
        Field("host", check_name),
        _AT,
        # The instance's secret: from this hello on, only messages that carry it are the
        # instance's (codec's version 2 envelope). A client older than tokens sends none.
        Field("token", check_optional_token, required=False),
        # Where its pid means something (leases.host_id). Without it (a client older than host
        # ids) the instance is on the writer's host. Another host's instance lives by heartbeats.
        Field("host_id", check_optional_id, required=False),
    ),
    GOODBYE: (_AT,),
    CREATE_WORKFLOW: (
        Field("id", check_id),
        Field("workflow_name", check_name),
        Field("metadata", check_json_object_text),
        _AT,
    ),
    UPDATE_WORKFLOW_STATUS: (
        Field("id", check_id),
        Field("status", check_status),
        Field("error_message", check_optional_text, required=False),
        _AT,
    ),
    CREATE_TASK: (
        Field("id", check_id),
        Field("workflow_id", check_id),
        Field("task_name", check_name),
        Field("execution_order", check_int32),
        _AT,
    ),
    UPDATE_TASK_STATUS: (
        Field("id", check_id),
        Field("status", check_status),
        Field("output", check_optional_text, required=False),
        Field("error_message", check_optional_text, required=False),
        _AT,
    ),
    APPEND_TASK_LOG: (
        Field("id", check_id),
        Field("line", check_text),
        _AT,
    ),
    AUDIT_EVENT: (
        Field("id", check_id),
        Field("event_type", check_name),
        Field("message", check_text),
        Field("workflow_id", check_optional_id, required=False),
        Field("task_id", check_optional_id, required=False),
        Field("data", check_json_object_text),
        _AT,
    ),
    # Retention, carried out by the writer in order with everything else. `id` names the
    # audit event in which the writer reports what it deleted.
    PRUNE: (
        Field("id", check_id),
        Field("older_than_us", check_timestamp_us),
        Field("statuses", check_prunable_statuses),
        _AT,
    ),
}


# The same table as plain tuples: the writer validates every operation it receives.
_SPECS: dict[str, tuple[tuple[str, Check, bool], ...]] = {
    name: tuple((f.name, f.check, f.required) for f in fields) for name, fields in OPERATIONS.items()
}


def validate_operation(name: object, payload: object) -> dict[str, Any]:
    """Check one operation and return its field values (absent optional fields are None).

    Raises InvalidOperation with a one-line reason for an unknown name, a payload that is not
    a map, a missing or unexpected field, or a field that breaks its rule.
    """
    if not isinstance(name, str):
        raise InvalidOperation(f"operation name must be a string, got {type(name).__name__}")
    fields = _SPECS.get(name)
    if fields is None:
        raise InvalidOperation(f"unknown operation {name[:64]!r}")
    if not isinstance(payload, dict):
        raise InvalidOperation(f"{name}: payload must be a map, got {type(payload).__name__}")
    values: dict[str, Any] = {}
    present = 0
    try:
        for field_name, check, required in fields:
            value = payload.get(field_name, _MISSING)
            if value is _MISSING:
                if required:
                    raise InvalidOperation(f"missing field {field_name!r}")
                values[field_name] = None
            else:
                values[field_name] = check(field_name, value)
                present += 1
    except InvalidOperation as exc:
        raise InvalidOperation(f"{name}: {exc.reason}") from None
    if present != len(payload):
        extra = sorted(str(k)[:64] for k in payload if k not in values)
        raise InvalidOperation(f"{name}: unexpected fields {extra}")
    return values


_MISSING = object()
