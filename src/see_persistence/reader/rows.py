"""Rows of the three record tables as the protocol's models, through pydantic's public API only.

Two paths give the same models:

- The validated path, for any row: the row goes to `Model.model_validate`, which parses the
  RFC 3339 text, the status and the 0/1 success itself; Python decodes only the JSON columns.
  A row it cannot take as it is (naive or odd timestamps from another writer) is built from
  values Python parsed (`_slow`), which reads naive time as UTC.
- The quick path, for rows exactly as our writer writes them: a known status, success
  NULL/0/1, timestamps in the writer's 32-character UTC form
  (`YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, which datetime.fromisoformat reads in C) and JSON text
  with nothing around the value. Python prepares those fields' final values, and one strict
  validation of the whole list (a TypeAdapter) builds the models: the values are already of
  their fields' exact types, so strict validation checks and stores them without converting
  any, and refuses anything but text where text belongs. A row whose values cannot be
  prepared (`_Odd`, or the error the preparing ran into), or that the strict validation names
  in its error, takes the validated path. The only visible difference: quick-path datetimes
  carry datetime.timezone.utc rather than pydantic's equal TzInfo(0), as the slow path's do.

Building a model costs more than reading its row, whichever public way. Measured on pydantic
2.14 for a page of 50 workflow rows as the writer writes them, beside reading them through
sqlite3 (100 µs): preparing the values 70 µs and their strict validation 67 µs (lax: the
same); lax validation of dict(zip(...)) rows with the JSON decoded, pydantic parsing the
timestamps, 87 µs after 80 µs of building those dicts; `model_construct` 170 µs; and
validate_json() of a JSON array that SQLite builds (json_group_array) 116 µs, after 26 µs
more in SQLite than the plain read. The floor: 50 models of 11 fields of type Any, from
ready dicts, take 44 µs, and building those dicts 28 µs, so models add at least 70 % of the
read on top of it. Scans of many rows that need no models have Reader.list_workflow_rows,
which costs what reading does.

tests/test_reader_rows.py proves the two paths agree, row shape by row shape.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..protocol.models import AuditEvent, JsonValue, TaskExecution, WorkflowExecution
from ..protocol.status import Status
from .columns import (  # noqa: F401 - read here by tests and tools
    AUDIT_COLUMNS,
    AUDIT_FIELDS,
    LOGS_COLUMN,
    TASK_COLUMNS,
    TASK_FIELDS,
    WORKFLOW_COLUMNS,
    WORKFLOW_FIELDS,
    optional_time,
)

_JSON = json.JSONDecoder()
# What a JSON column reads as, on both paths (the models' docstrings say it to callers).
# Nothing is invented: a wrapper such as {"_value": ...} would be a value never stored, and
# one a real object could hold too. Text that is not JSON (or nests deeper than Python can
# build) reads as itself, so a GUI shows what is there and one odd row never fails a list.
_NOT_JSON = (ValueError, RecursionError)


def json_value(text: str | None) -> JsonValue:
    """The JSON value in a metadata/data column: NULL reads as {}, text that is not JSON as itself."""
    if text is None or text == "{}":
        return {}  # the seed's "no metadata": a NULL column
    try:
        return _JSON.decode(text)  # type: ignore[no-any-return]
    except _NOT_JSON:
        return text


def json_list(text: str | None) -> list[JsonValue]:
    """The items of a logs column's JSON array as stored; NULL and JSON null read as [] (no logs).

    Another JSON value reads as a list of that one value and text that is not JSON as a list
    of that text: logs is a list, and these keep what is there visible in it.
    """
    if text is None or text == "[]":
        return []
    try:
        value = _JSON.decode(text)
    except _NOT_JSON:
        return [text]
    if type(value) is list:
        return value
    return [] if value is None else [value]


# -- the validated path: pydantic's compiled validator over the row, else Python's parsing ----------

_M = TypeVar("_M", bound=BaseModel)
_TIMES = ("created_at", "started_at", "completed_at", "last_updated")


def _workflow_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    fields = dict(zip(WORKFLOW_FIELDS, row, strict=True))
    fields["metadata"] = json_value(fields["metadata"])
    return fields


def _task_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    fields = dict(zip(TASK_FIELDS, row, strict=True))
    fields["logs"] = json_list(fields["logs"])
    fields["retry_count"] = fields["retry_count"] or 0  # NULL reads as the column's default
    fields["execution_order"] = fields["execution_order"] or 0
    return fields


def _audit_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    fields = dict(zip(AUDIT_FIELDS, row, strict=True))
    fields["data"] = json_value(fields["data"])
    return fields


def _slow(model: type[_M], fields: dict[str, Any], times: tuple[str, ...]) -> _M:
    """`model` from `fields` with its times, status and success parsed in Python (naive time is UTC)."""
    for name in times:
        fields[name] = optional_time(fields[name])
    if "status" in fields:
        fields["status"] = Status(fields["status"])  # an unknown status raises, naming it
        fields["success"] = None if fields["success"] is None else bool(fields["success"])
    return model(**fields)


def _validated(model: type[_M], fields: dict[str, Any], times: tuple[str, ...]) -> _M:
    """`model` from `fields` through `model.model_validate`, or through _slow if the row is odd."""
    try:
        validated = model.model_validate(fields)
    except ValidationError:
        return _slow(model, fields, times)
    for name in times:
        moment = getattr(validated, name)
        if moment is not None and moment.tzinfo is None:
            return _slow(model, fields, times)  # a naive timestamp: read as UTC
    return validated


def _validated_workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    return _validated(WorkflowExecution, _workflow_fields(row), _TIMES)


def _validated_task(row: tuple[Any, ...]) -> TaskExecution:
    return _validated(TaskExecution, _task_fields(row), _TIMES)


def _validated_audit(row: tuple[Any, ...]) -> AuditEvent:
    return _validated(AuditEvent, _audit_fields(row), ("timestamp",))


def _slow_workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    return _slow(WorkflowExecution, _workflow_fields(row), _TIMES)


def _slow_task(row: tuple[Any, ...]) -> TaskExecution:
    return _slow(TaskExecution, _task_fields(row), _TIMES)


def _slow_audit(row: tuple[Any, ...]) -> AuditEvent:
    return _slow(AuditEvent, _audit_fields(row), ("timestamp",))


# -- the quick path: values prepared in Python, validated strictly in one call per query ----------


class _Odd(Exception):
    """A row the quick path does not take as it is."""


# What odd rows raise while being prepared (RecursionError: JSON nested deeper than Python builds).
_ODD_ROW = (_Odd, KeyError, ValueError, TypeError, StopIteration, IndexError, RecursionError)
_WRITER_TIMESTAMP_CHARS = 32  # len("2026-01-02T03:04:05.123456+00:00")
_UTC = timezone.utc
_STATUSES: dict[Any, Status] = {status.value: status for status in Status}
_BOOLS: dict[Any, bool | None] = {None: None, 0: False, 1: True}
# The C scanner that decode() calls between two whitespace regexes: text from our writer has
# no whitespace around the value, and anything else falls back. (typeshed mistypes its arg.)
_scan_json: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_JSON)  # type: ignore[arg-type]
_fromiso = datetime.fromisoformat


def _writer_time(text: Any) -> datetime:
    """The datetime in `text` if it is in the writer's form, else _Odd."""
    moment = _fromiso(text)  # TypeError if it is not text
    if moment.tzinfo is not _UTC or len(text) != _WRITER_TIMESTAMP_CHARS:
        raise _Odd
    return moment


def _writer_times(created: Any, started: Any, completed: Any, updated: Any) -> tuple[Any, Any, Any, Any]:
    """A record's four timestamps as datetimes if each is NULL or in the writer's form, else _Odd.

    One call for the four, written out: a call per timestamp was a fifth of preparing a row.
    Empty text stays as it is, and strict validation refuses it (the validated path reads it
    as NULL).
    """
    created_at = _fromiso(created)
    started_at = started and _fromiso(started)
    completed_at = completed and _fromiso(completed)
    last_updated = updated and _fromiso(updated)
    if (
        created_at.tzinfo is not _UTC
        or len(created) != _WRITER_TIMESTAMP_CHARS
        or (started and (started_at.tzinfo is not _UTC or len(started) != _WRITER_TIMESTAMP_CHARS))
        or (completed and (completed_at.tzinfo is not _UTC or len(completed) != _WRITER_TIMESTAMP_CHARS))
        or (updated and (last_updated.tzinfo is not _UTC or len(updated) != _WRITER_TIMESTAMP_CHARS))
    ):
        raise _Odd
    return created_at, started_at, completed_at, last_updated


def _writer_json(text: str) -> Any:
    """The JSON value in `text` if nothing surrounds it, else _Odd (or the decoder's error)."""
    value, end = _scan_json(text, 0)
    if end != len(text):
        raise _Odd
    return value


# Text columns are not checked here: strict validation refuses anything but text where text
# belongs, and _models sends only the rows it names in its error the validated way.


def _workflow_values(row: tuple[Any, ...]) -> dict[str, Any]:
    wid, name, status, created, started, completed, success, error, meta, instance, updated = row
    created_at, started_at, completed_at, last_updated = _writer_times(created, started, completed, updated)
    return {
        "id": wid,
        "workflow_name": name,
        "status": _STATUSES[status],
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "success": _BOOLS[success],
        "error_message": error,
        "metadata": {} if meta is None or meta == "{}" else _writer_json(meta),
        "instance_id": instance,
        "last_updated": last_updated,
    }


def _task_values(row: tuple[Any, ...]) -> dict[str, Any]:
    (tid, wid, name, status, created, started, completed, success, error, output, logs, retries, order,
     instance, updated) = row  # fmt: skip
    created_at, started_at, completed_at, last_updated = _writer_times(created, started, completed, updated)
    if logs is None or logs == "[]":
        logs = []
    else:
        logs = _writer_json(logs)
        if type(logs) is not list:
            raise _Odd  # JSON null or a lone value: the validated path makes it a list
    return {
        "id": tid,
        "workflow_id": wid,
        "task_name": name,
        "status": _STATUSES[status],
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "success": _BOOLS[success],
        "error_message": error,
        "output": output,
        "logs": logs,
        "retry_count": retries or 0,  # NULL reads as the column's default, as on the validated path
        "execution_order": order or 0,
        "instance_id": instance,
        "last_updated": last_updated,
    }


def _audit_values(row: tuple[Any, ...]) -> dict[str, Any]:
    eid, wid, tid, event_type, message, at, data, instance = row
    return {
        "id": eid,
        "workflow_id": wid,
        "task_id": tid,
        "event_type": event_type,
        "message": message,
        "timestamp": _writer_time(at),
        "data": {} if data is None or data == "{}" else _writer_json(data),
        "instance_id": instance,
    }


# A list of each model, validated in one call: strict, because the quick path prepares every
# value as the exact type its field holds, and strict validation checks such values without
# converting any.
_WORKFLOW_LIST = TypeAdapter(list[WorkflowExecution])
_TASK_LIST = TypeAdapter(list[TaskExecution])
_AUDIT_LIST = TypeAdapter(list[AuditEvent])


def _models(
    rows: list[tuple[Any, ...]],
    values: Callable[[tuple[Any, ...]], dict[str, Any]],
    adapter: TypeAdapter[list[_M]],
    validated: Callable[[tuple[Any, ...]], _M],
) -> list[_M]:
    prepared: list[dict[str, Any]] = []
    odd: dict[int, _M] = {}  # by position in `rows`
    for index, row in enumerate(rows):
        try:
            prepared.append(values(row))
        except _ODD_ROW:
            odd[index] = validated(row)
    try:
        built = adapter.validate_python(prepared, strict=True)
    except ValidationError as exc:
        # Values the model refuses (a number or bytes where text belongs, a constraint this
        # module does not know of): the rows the error names take the validated path, which
        # says what is wrong with them, and the others are validated again without them.
        positions = [index for index in range(len(rows)) if index not in odd]
        refused = {error["loc"][0] if error["loc"] else None for error in exc.errors()}
        if not all(type(item) is int for item in refused):
            return [validated(row) for row in rows]
        for item in refused:
            odd[positions[item]] = validated(rows[positions[item]])  # type: ignore[index]
        try:
            built = adapter.validate_python(
                [kept for item, kept in enumerate(prepared) if item not in refused], strict=True
            )
        except ValidationError:
            return [validated(row) for row in rows]
    if not odd:
        return built
    quick = iter(built)
    return [odd[index] if index in odd else next(quick) for index in range(len(rows))]


def workflows(rows: list[tuple[Any, ...]]) -> list[WorkflowExecution]:
    """The models for rows of WORKFLOW_COLUMNS, each built quickly if its row is as our writer wrote it."""
    return _models(rows, _workflow_values, _WORKFLOW_LIST, _validated_workflow)


def tasks(rows: list[tuple[Any, ...]]) -> list[TaskExecution]:
    """The models for rows of TASK_COLUMNS, each built quickly if its row is as our writer wrote it."""
    return _models(rows, _task_values, _TASK_LIST, _validated_task)


def audits(rows: list[tuple[Any, ...]]) -> list[AuditEvent]:
    """The models for rows of AUDIT_COLUMNS, each built quickly if its row is as our writer wrote it."""
    return _models(rows, _audit_values, _AUDIT_LIST, _validated_audit)


def _one(
    row: tuple[Any, ...],
    values: Callable[[tuple[Any, ...]], dict[str, Any]],
    model: type[_M],
    validated: Callable[[tuple[Any, ...]], _M],
) -> _M:
    # One row (a lookup by id): _models' lists and positions cost a tenth of the call.
    try:
        return model.model_validate(values(row), strict=True)
    except _ODD_ROW:  # ValidationError is a ValueError
        return validated(row)


def workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    """The model for one row of WORKFLOW_COLUMNS."""
    return _one(row, _workflow_values, WorkflowExecution, _validated_workflow)


def task(row: tuple[Any, ...]) -> TaskExecution:
    """The model for one row of TASK_COLUMNS."""
    return _one(row, _task_values, TaskExecution, _validated_task)


def audit(row: tuple[Any, ...]) -> AuditEvent:
    """The model for one row of AUDIT_COLUMNS."""
    return _one(row, _audit_values, AuditEvent, _validated_audit)
