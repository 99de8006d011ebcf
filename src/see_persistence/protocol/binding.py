"""The writer's fast path: from an operation payload in its usual shape straight to its
statement and positional parameters.

The writer checks every field of every operation it receives; the general check
(`operations.validate_operation`, then `statements.statement_for` and `Statement.bind`)
walks the field table and builds a dict on the way, which cost the writer more than SQLite
did. Here each operation gets one function, generated from the same field table, that tests
the usual case of every field inline (a dict with exactly the operation's keys, ASCII text
within its limits, in-range integers, lowercase status text) and returns the statement and
its parameters. Anything else returns None and takes the general path, which gives the same
result or the precise reason for a dead letter; tests hold the two paths to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import operations as ops
from . import statements, timestamps
from .errors import InvalidOperation

Bound = tuple[statements.Statement, tuple[Any, ...]]
FastBind = Callable[[Any, str, str], "Bound | None"]

_ID = "type({v}) is str and 0 < len({v}) <= MAX_ID_CHARS and {v}.isascii() and not {v}.isspace()"
_NAME = "type({v}) is str and 0 < len({v}) <= MAX_NAME_CHARS and {v}.isascii() and not {v}.isspace()"
_TEXT = "type({v}) is str and len({v}) <= MAX_TEXT_CHARS and {v}.isascii()"

# The usual case of each field check, as an expression in {v}; each one implies the check passes.
_USUAL_CASE: dict[Any, str] = {
    ops.check_id: _ID,
    ops.check_optional_id: f"({{v}} is None or ({_ID}))",
    ops.check_name: _NAME,
    ops.check_text: _TEXT,
    ops.check_optional_text: f"({{v}} is None or ({_TEXT}))",
    ops.check_int32: "type({v}) is int and INT32_MIN <= {v} <= INT32_MAX",
    ops.check_timestamp_us: "type({v}) is int and 0 <= {v} <= MAX_TIMESTAMP_US",
    ops.check_json_object_text: "type({v}) is str and ({v} == '{{}}' or json_object_ok({v}))",
}

_scan_json: Callable[[str, int], tuple[Any, int]] = ops._JSON_DECODER.scan_once  # type: ignore[attr-defined]


def json_object_ok(text: str) -> bool:
    """True if `text` passes check_json_object_text (decoded once, by the C scanner when it can)."""
    shallow = text.count("[") + text.count("{") <= ops.MAX_JSON_DEPTH
    if text.isascii() and len(text) <= ops.MAX_JSON_CHARS and text[:1] == "{" and shallow:
        try:
            value, end = _scan_json(text, 0)
        except (ValueError, RecursionError, StopIteration):
            return False
        if end == len(text) and type(value) is dict:
            return ops.json_integers_fit(text, value)  # what the Rust core reads exactly
    # Whitespace around the object, or text the quick look cannot judge: the check decides.
    try:
        ops.check_json_object_text("", text)
    except InvalidOperation:
        return False
    return True


def _params(statement: statements.Statement) -> str:
    values = ("format_us(at_us)" if name == "at" else name for name in statement.names)
    return f"({', '.join(values)},)"


def _source(fields: tuple[ops.Field, ...], by_status: dict[str | None, statements.Statement]) -> str:
    lines = [
        "def bind(p, instance_id, now):",
        "    if type(p) is not dict or p.keys() != KEYS:",
        "        return None",
    ]
    for field in fields:
        lines.append(f"    {field.name} = p[{field.name!r}]")
        if field.check is ops.check_status:
            # the statement depends on the status: one branch each, exact lowercase text only
            continue
        lines.append(f"    if not ({_USUAL_CASE[field.check].format(v=field.name)}):")
        lines.append("        return None")
    if None in by_status:
        lines.append(f"    return STATEMENTS[None], {_params(by_status[None])}")
    else:
        status_field = next(f.name for f in fields if f.check is ops.check_status)
        for status, statement in by_status.items():
            lines.append(f"    if {status_field} == {status!r}:")
            lines.append(f"        return STATEMENTS[{status!r}], {_params(statement)}")
        lines.append("    return None")
    return "\n".join(lines) + "\n"


def _statements_of(name: str) -> dict[str | None, statements.Statement]:
    return {status: statement for (op, status), statement in statements.COMPILED.items() if op == name}


def _build(name: str) -> FastBind | None:
    fields = ops.OPERATIONS[name]
    if any(f.check not in _USUAL_CASE and f.check is not ops.check_status for f in fields):
        return None  # rare operations (hello, prune) keep to the general path
    by_status = _statements_of(name)
    known = {f.name for f in fields} | {"instance_id", "now", "at"}
    if not by_status or any(not set(s.names) <= known for s in by_status.values()):
        return None
    namespace: dict[str, Any] = {
        "KEYS": frozenset(f.name for f in fields),
        "STATEMENTS": by_status,
        "format_us": timestamps.format_us,
        "json_object_ok": json_object_ok,
        "MAX_ID_CHARS": ops.MAX_ID_CHARS,
        "MAX_NAME_CHARS": ops.MAX_NAME_CHARS,
        "MAX_TEXT_CHARS": ops.MAX_TEXT_CHARS,
        "MAX_TIMESTAMP_US": timestamps.MAX_TIMESTAMP_US,
        "INT32_MIN": ops.INT32_MIN,
        "INT32_MAX": ops.INT32_MAX,
    }
    exec(compile(_source(fields, by_status), f"<fast path of {name}>", "exec"), namespace)
    bind: FastBind = namespace["bind"]
    return bind


FAST_BINDS: dict[str, FastBind] = {
    name: bind for name in ops.OPERATIONS if (bind := _build(name)) is not None
}
"""Operation name -> its fast path: (payload, instance_id, now) -> (statement, params) or None."""


def source_of(name: str) -> str:
    """The generated source of an operation's fast path (for tests and for reading)."""
    return _source(ops.OPERATIONS[name], _statements_of(name))
