"""Read-only queries over a mode=ro connection, returned as the protocol's models."""

from __future__ import annotations

import json
import json.scanner
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from pydantic import BaseModel, ValidationError

from .. import leases, locations
from ..database import open_read_only
from ..protocol import task_logs, timestamps
from ..protocol.errors import CallerError, ReadOnlyViolation
from ..protocol.models import (
    AuditEvent,
    Instance,
    InstanceStats,
    JsonValue,
    Rejection,
    TaskExecution,
    WorkflowExecution,
    WriterStatus,
)
from ..protocol.status import Status

if TYPE_CHECKING:
    from .watch import Watcher

log = logging.getLogger("see_persistence.reader")

_WORKFLOW_COLUMNS = (
    "id, workflow_name, status, created_at, started_at, completed_at, success, error_message,"
    " metadata, instance_id, last_updated"
)
_TASK_COLUMNS = (
    "id, workflow_id, task_name, status, created_at, started_at, completed_at, success,"
    " error_message, output, logs, retry_count, execution_order, instance_id, last_updated"
)
_AUDIT_COLUMNS = "id, workflow_id, task_id, event_type, message, timestamp, data, instance_id"
_INSTANCE_COLUMNS = "id, pid, process_create_time, host, started_at, last_seen, ended_at, state, last_seq"
# `rejected` and `boot_id` came with schema version 4; on an older file a literal 0 and NULL
# stand in for them, so every instance row has the same shape. Keyed by (has rejected, has
# boot_id).
_INSTANCE_SELECT = {
    (rejected, boot): f"SELECT {_INSTANCE_COLUMNS}, {'rejected' if rejected else '0'},"
    f" {'boot_id' if boot else 'NULL'} FROM instances"
    for rejected in (True, False)
    for boot in (True, False)
}

# The record queries' SQL, built once: the same string each call is found in the
# connection's statement cache without being rebuilt and hashed again.
_PAGE = " LIMIT ? OFFSET ?"
_SQL_WORKFLOW = f"SELECT {_WORKFLOW_COLUMNS} FROM workflow_executions WHERE id = ?"
# Newest first. Each filter has an index that yields its rows already in this order (schema
# version 4: (status, created_at, id) and (instance_id, created_at, id)), so SQLite reads 50
# entries for 50 rows instead of sorting every match; tests/test_reader_views.py checks the
# plans. Unfiltered, the seed's index on created_at gives the order and SQLite sorts only
# rows that share a created_at by id ("RIGHT PART OF ORDER BY"), a few at most. With both
# filters it walks the instance's index and skips rows of other statuses: a status the
# instance has few of costs a read of the instance's rows (no index has both columns).
_NEWEST = f"SELECT {_WORKFLOW_COLUMNS} FROM workflow_executions{{}} ORDER BY created_at DESC, id DESC" + _PAGE
# list_workflows' SQL by (filters on status, filters on instance_id).
_SQL_NEWEST_WORKFLOWS: dict[tuple[bool, bool], str] = {
    (False, False): _NEWEST.format(""),
    (True, False): _NEWEST.format(" WHERE status = ?"),
    (False, True): _NEWEST.format(" WHERE instance_id = ?"),
    (True, True): _NEWEST.format(" WHERE status = ? AND instance_id = ?"),
}
_SQL_WORKFLOWS_OF_INSTANCE = _SQL_NEWEST_WORKFLOWS[False, True]
_SQL_TASKS_OF_WORKFLOW = (
    f"SELECT {_TASK_COLUMNS} FROM task_executions WHERE workflow_id = ?"
    " ORDER BY execution_order, created_at, id"
)
_LOG_CONTINUED_JSON = task_logs.LOG_CONTINUED_JSON
_SQL_AUDIT_EVENT = f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE id = ?"
_SQL_AUDIT_TRAIL = f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE workflow_id = ? ORDER BY timestamp, id"
# A page of either list; the whole list keeps the SQL above, with no LIMIT to bind.
_SQL_TASKS_OF_WORKFLOW_PAGE = _SQL_TASKS_OF_WORKFLOW + _PAGE
_SQL_AUDIT_TRAIL_PAGE = _SQL_AUDIT_TRAIL + _PAGE
_SQL_INSTANCES_PAGE = " ORDER BY started_at DESC" + _PAGE
# Newest first; by instance through idx_see_dead_letters_instance (instance_id, id).
_REJECTIONS = (
    "SELECT id, received_at, instance_id, seq, reason, raw FROM dead_letters{} ORDER BY id DESC" + _PAGE
)
_SQL_REJECTIONS = _REJECTIONS.format("")
_SQL_REJECTIONS_OF_INSTANCE = _REJECTIONS.format(" WHERE instance_id = ?")

# What a statement sent through query() may do: read, call functions, and run the pragmas
# that only report. Everything else (writes, ATTACH, pragmas that set) is refused by SQLite
# itself through the authorizer, before the statement runs.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, 33}
)  # 33: RECURSIVE
# Pragmas whose argument names a table or a count, and that only ever report.
_REPORTING_PRAGMAS_WITH_ARGUMENT = frozenset(
    {
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
# Pragmas that report when given no argument (with one, several of them would set).
_REPORTING_PRAGMAS = frozenset(
    {
        "database_list",
        "compile_options",
        "user_version",
        "schema_version",
        "page_count",
        "page_size",
        "freelist_count",
        "journal_mode",
        "collation_list",
        "function_list",
        "table_list",
        "data_version",
        "encoding",
        "foreign_keys",
        "synchronous",
    }
)


def _is_read_only_action(action: int, arg1: str | None, arg2: str | None) -> bool:
    if action in _READ_ACTIONS:
        return True
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
        pragma = arg1.lower()
        return pragma in _REPORTING_PRAGMAS_WITH_ARGUMENT or (pragma in _REPORTING_PRAGMAS and arg2 is None)
    return False


class ReadOnlyAuthorizer:
    """An sqlite3 authorizer that denies every action but reading, and remembers what it denied."""

    def __init__(self) -> None:
        self.denied: list[int] = []

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if _is_read_only_action(action, arg1, arg2):
            return sqlite3.SQLITE_OK
        self.denied.append(action)
        return sqlite3.SQLITE_DENY


def _allow_everything(*args: object) -> int:
    return sqlite3.SQLITE_OK


def _clear_authorizer(conn: sqlite3.Connection) -> None:
    # Python 3.10 cannot clear an authorizer (None is taken as a callback that fails, which
    # denies every later statement); an authorizer that allows everything does the same.
    if sys.version_info >= (3, 11):
        conn.set_authorizer(None)
    else:
        conn.set_authorizer(_allow_everything)


_SQLITE_READONLY = 8  # the primary result code; sqlite3 exports it only from Python 3.11


def is_read_only_error(exc: sqlite3.DatabaseError) -> bool:
    """True if SQLite refused `exc`'s statement because the connection is read-only."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    return code is not None and code & 0xFF == _SQLITE_READONLY


_JSON = json.JSONDecoder()


def _endpoint_pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    """The lease's `endpoints` column (a JSON array of [pull, pub] pairs); () if absent or malformed."""
    if not text:
        return ()
    try:
        pairs = json.loads(text)
        return tuple((str(pull), str(pub)) for pull, pub in pairs)
    except (ValueError, TypeError):
        return ()


def _time(text: str | None) -> Any:
    return timestamps.parse(text) if text else None


# What a JSON column reads as, on both paths (the models' docstrings say it to callers).
# Nothing is invented: a wrapper such as {"_value": ...} would be a value never stored, and
# one a real object could hold too. Text that is not JSON (or nests deeper than Python can
# build) reads as itself, so a GUI shows what is there and one odd row never fails a list.
_NOT_JSON = (ValueError, RecursionError)


def _json_value(text: str | None) -> JsonValue:
    """The JSON value in a metadata/data column: NULL reads as {}, text that is not JSON as itself."""
    if text is None or text == "{}":
        return {}  # the seed's "no metadata": a NULL column
    try:
        return _JSON.decode(text)  # type: ignore[no-any-return]
    except _NOT_JSON:
        return text


def _json_list(text: str | None) -> list[JsonValue]:
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


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _slow_workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    return WorkflowExecution(
        id=row[0],
        workflow_name=row[1],
        status=Status(row[2]),
        created_at=_time(row[3]),
        started_at=_time(row[4]),
        completed_at=_time(row[5]),
        success=_bool(row[6]),
        error_message=row[7],
        metadata=_json_value(row[8]),
        instance_id=row[9],
        last_updated=_time(row[10]),
    )


def _slow_task(row: tuple[Any, ...]) -> TaskExecution:
    return TaskExecution(
        id=row[0],
        workflow_id=row[1],
        task_name=row[2],
        status=Status(row[3]),
        created_at=_time(row[4]),
        started_at=_time(row[5]),
        completed_at=_time(row[6]),
        success=_bool(row[7]),
        error_message=row[8],
        output=row[9],
        logs=_json_list(row[10]),
        retry_count=row[11] or 0,
        execution_order=row[12] or 0,
        instance_id=row[13],
        last_updated=_time(row[14]),
    )


def _slow_audit(row: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        id=row[0],
        workflow_id=row[1],
        task_id=row[2],
        event_type=row[3],
        message=row[4],
        timestamp=_time(row[5]),
        data=_json_value(row[6]),
        instance_id=row[7],
    )


# The validated path hands the row to pydantic's compiled validator, which parses the RFC
# 3339 text, the status and the 0/1 success itself; Python only decodes the JSON columns. A
# row it cannot take as it is (naive or odd timestamps from another writer) goes the slow way.
_WORKFLOW_FIELDS = tuple(name.strip() for name in _WORKFLOW_COLUMNS.split(","))
_TASK_FIELDS = tuple(name.strip() for name in _TASK_COLUMNS.split(","))
_AUDIT_FIELDS = tuple(name.strip() for name in _AUDIT_COLUMNS.split(","))
_validate_workflow = WorkflowExecution.__pydantic_validator__.validate_python
_validate_task = TaskExecution.__pydantic_validator__.validate_python
_validate_audit = AuditEvent.__pydantic_validator__.validate_python


_TIMES = ("created_at", "started_at", "completed_at", "last_updated")


def _via_validator(
    validate: Callable[[dict[str, Any]], Any],
    names: tuple[str, ...],
    row: tuple[Any, ...],
    decoded: dict[str, Any],
    times: tuple[str, ...],
    slow: Callable[[tuple[Any, ...]], Any],
) -> Any:
    """The model for `row` from the compiled validator, or from `slow` if the row is odd."""
    fields = dict(zip(names, row, strict=True))
    fields.update(decoded)
    try:
        model = validate(fields)
    except ValidationError:
        return slow(row)
    for name in times:
        moment = getattr(model, name)
        if moment is not None and moment.tzinfo is None:
            return slow(row)  # a naive timestamp: the slow path reads it as UTC
    return model


def _validated_workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    decoded = {"metadata": _json_value(row[8])}
    return _via_validator(_validate_workflow, _WORKFLOW_FIELDS, row, decoded, _TIMES, _slow_workflow)  # type: ignore[no-any-return]


def _validated_task(row: tuple[Any, ...]) -> TaskExecution:
    decoded = {"logs": _json_list(row[10]), "retry_count": row[11] or 0, "execution_order": row[12] or 0}
    return _via_validator(_validate_task, _TASK_FIELDS, row, decoded, _TIMES, _slow_task)  # type: ignore[no-any-return]


def _validated_audit(row: tuple[Any, ...]) -> AuditEvent:
    decoded = {"data": _json_value(row[6])}
    return _via_validator(_validate_audit, _AUDIT_FIELDS, row, decoded, ("timestamp",), _slow_audit)  # type: ignore[no-any-return]


# The fast path builds the models without validating them, the way model_construct does but
# without its per-field Python loop, for rows exactly as our writer writes them: ids and
# names as text, a known status, success NULL/0/1, timestamps in the writer's 32-character
# UTC form (`YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, which datetime.fromisoformat reads in C)
# and JSON text with nothing around the value: any JSON value in metadata and data (the
# models hold each as decoded), an array in logs. Anything else (another writer's 9-digit or
# naive timestamps, blobs, NULLs where text belongs, text that is not JSON or has
# whitespace around it, logs that are not an array, unknown statuses) raises
# inside the fast path and the row takes the validated path above, so the models are the
# ones that path gives. The only visible difference: fast-path datetimes carry
# datetime.timezone.utc rather than pydantic's equal TzInfo(0), as the slow path's do.
class _Odd(Exception):
    """A row the fast path does not take as it is."""


# What odd rows raise (RecursionError: JSON nested deeper than Python builds).
_ODD_ROW = (_Odd, KeyError, ValueError, TypeError, StopIteration, IndexError, RecursionError)
_WRITER_TIMESTAMP_CHARS = 32  # len("2026-01-02T03:04:05.123456+00:00")
_UTC = timezone.utc
_STATUSES: dict[Any, Status] = {status.value: status for status in Status}
_BOOLS: dict[Any, bool | None] = {None: None, 0: False, 1: True}
_STR_OR_NONE = frozenset({str, type(None)})
# The C scanner that decode() calls between two whitespace regexes: text from our writer has
# no whitespace around the value, and anything else falls back. (typeshed mistypes its arg.)
_scan_json: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_JSON)  # type: ignore[arg-type]
_new = object.__new__
_fromiso = datetime.fromisoformat
# BaseModel's slots, set through their descriptors as model_construct does with
# object.__setattr__ (one attribute lookup fewer each).
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _constructible(model: type[BaseModel], columns: tuple[str, ...]) -> bool:
    """True if `model` is still one that the fast path may build without validating."""
    decorators = model.__pydantic_decorators__
    return (
        tuple(model.model_fields) == columns
        and not model.__private_attributes__  # else __pydantic_private__ is not None
        and model.__pydantic_post_init__ is None
        and model.model_config.get("extra") != "allow"  # else __pydantic_extra__ is a dict
        and not model.__pydantic_root_model__
        and not (decorators.validators or decorators.field_validators or decorators.model_validators)
        and not decorators.root_validators
    )


# If a model gains what the fast path cannot honour (a validator, a private attribute, ...),
# every row takes the validated path again.
_FAST_WORKFLOWS = _constructible(WorkflowExecution, _WORKFLOW_FIELDS)
_FAST_TASKS = _constructible(TaskExecution, _TASK_FIELDS)
_FAST_AUDIT = _constructible(AuditEvent, _AUDIT_FIELDS)
# Every column is given, so a model's fields_set is all its fields (each model gets a copy).
_WORKFLOW_FIELDS_SET = frozenset(_WORKFLOW_FIELDS)
_TASK_FIELDS_SET = frozenset(_TASK_FIELDS)
_AUDIT_FIELDS_SET = frozenset(_AUDIT_FIELDS)


def _workflows(rows: list[tuple[Any, ...]]) -> list[WorkflowExecution]:
    """The models for workflow rows, each built fast if its row is as our writer wrote it."""
    if not _FAST_WORKFLOWS:
        return [_validated_workflow(row) for row in rows]
    out: list[WorkflowExecution] = []
    # Written out column by column, with module globals (cached lookups on 3.11): a helper
    # call per timestamp, or binding the globals to locals per call, measured slower.
    for row in rows:
        try:
            (wid, name, status, created, started, completed, success, error, meta, instance, updated) = row
            if type(wid) is not str or type(name) is not str:
                raise _Odd
            if type(error) not in _STR_OR_NONE or type(instance) not in _STR_OR_NONE:
                raise _Odd
            if len(created) != _WRITER_TIMESTAMP_CHARS:
                raise _Odd
            created_at = _fromiso(created)
            if created_at.tzinfo is not _UTC:
                raise _Odd
            if started is not None:
                if len(started) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                started = _fromiso(started)
                if started.tzinfo is not _UTC:
                    raise _Odd
            if completed is not None:
                if len(completed) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                completed = _fromiso(completed)
                if completed.tzinfo is not _UTC:
                    raise _Odd
            if updated is not None:
                if len(updated) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                updated = _fromiso(updated)
                if updated.tzinfo is not _UTC:
                    raise _Odd
            if meta is None or meta == "{}":
                meta = {}
            else:
                text = meta
                meta, end = _scan_json(text, 0)
                if end != len(text):
                    raise _Odd
            model = _new(WorkflowExecution)
            _set_dict(
                model,
                {
                    "id": wid,
                    "workflow_name": name,
                    "status": _STATUSES[status],
                    "created_at": created_at,
                    "started_at": started,
                    "completed_at": completed,
                    "success": _BOOLS[success],
                    "error_message": error,
                    "metadata": meta,
                    "instance_id": instance,
                    "last_updated": updated,
                },
            )
            _set_fields_set(model, set(_WORKFLOW_FIELDS_SET))
            _set_extra(model, None)
            _set_private(model, None)
        except _ODD_ROW:
            model = _validated_workflow(row)
        out.append(model)
    return out


def _tasks(rows: list[tuple[Any, ...]]) -> list[TaskExecution]:
    """The models for task rows, each built fast if its row is as our writer wrote it."""
    if not _FAST_TASKS:
        return [_validated_task(row) for row in rows]
    out: list[TaskExecution] = []
    for row in rows:
        try:
            (
                tid,
                wid,
                name,
                status,
                created,
                started,
                completed,
                success,
                error,
                output,
                logs,
                retries,
                order,
                instance,
                updated,
            ) = row
            if type(tid) is not str or type(wid) is not str or type(name) is not str:
                raise _Odd
            if type(error) not in _STR_OR_NONE or type(output) not in _STR_OR_NONE:
                raise _Odd
            if type(instance) not in _STR_OR_NONE:
                raise _Odd
            retries = retries or 0  # NULL reads as the column's default, as on the validated path
            order = order or 0
            if type(retries) is not int or type(order) is not int:
                raise _Odd
            if len(created) != _WRITER_TIMESTAMP_CHARS:
                raise _Odd
            created_at = _fromiso(created)
            if created_at.tzinfo is not _UTC:
                raise _Odd
            if started is not None:
                if len(started) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                started = _fromiso(started)
                if started.tzinfo is not _UTC:
                    raise _Odd
            if completed is not None:
                if len(completed) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                completed = _fromiso(completed)
                if completed.tzinfo is not _UTC:
                    raise _Odd
            if updated is not None:
                if len(updated) != _WRITER_TIMESTAMP_CHARS:
                    raise _Odd
                updated = _fromiso(updated)
                if updated.tzinfo is not _UTC:
                    raise _Odd
            if logs is None or logs == "[]":
                logs = []
            else:
                text = logs
                logs, end = _scan_json(text, 0)
                if end != len(text) or type(logs) is not list:
                    raise _Odd  # JSON null or a lone value: the validated path makes it a list
            model = _new(TaskExecution)
            _set_dict(
                model,
                {
                    "id": tid,
                    "workflow_id": wid,
                    "task_name": name,
                    "status": _STATUSES[status],
                    "created_at": created_at,
                    "started_at": started,
                    "completed_at": completed,
                    "success": _BOOLS[success],
                    "error_message": error,
                    "output": output,
                    "logs": logs,
                    "retry_count": retries,
                    "execution_order": order,
                    "instance_id": instance,
                    "last_updated": updated,
                },
            )
            _set_fields_set(model, set(_TASK_FIELDS_SET))
            _set_extra(model, None)
            _set_private(model, None)
        except _ODD_ROW:
            model = _validated_task(row)
        out.append(model)
    return out


def _audits(rows: list[tuple[Any, ...]]) -> list[AuditEvent]:
    """The models for audit rows, each built fast if its row is as our writer wrote it."""
    if not _FAST_AUDIT:
        return [_validated_audit(row) for row in rows]
    out: list[AuditEvent] = []
    for row in rows:
        try:
            eid, wid, tid, event_type, message, at, data, instance = row
            if type(eid) is not str or type(event_type) is not str or type(message) is not str:
                raise _Odd
            if type(wid) not in _STR_OR_NONE or type(tid) not in _STR_OR_NONE:
                raise _Odd
            if type(instance) not in _STR_OR_NONE:
                raise _Odd
            if len(at) != _WRITER_TIMESTAMP_CHARS:
                raise _Odd
            at = _fromiso(at)
            if at.tzinfo is not _UTC:
                raise _Odd
            if data is None or data == "{}":
                data = {}
            else:
                text = data
                data, end = _scan_json(text, 0)
                if end != len(text):
                    raise _Odd
            model = _new(AuditEvent)
            _set_dict(
                model,
                {
                    "id": eid,
                    "workflow_id": wid,
                    "task_id": tid,
                    "event_type": event_type,
                    "message": message,
                    "timestamp": at,
                    "data": data,
                    "instance_id": instance,
                },
            )
            _set_fields_set(model, set(_AUDIT_FIELDS_SET))
            _set_extra(model, None)
            _set_private(model, None)
        except _ODD_ROW:
            model = _validated_audit(row)
        out.append(model)
    return out


def _workflow(row: tuple[Any, ...]) -> WorkflowExecution:
    return _workflows([row])[0]


def _task(row: tuple[Any, ...]) -> TaskExecution:
    return _tasks([row])[0]


def _audit(row: tuple[Any, ...]) -> AuditEvent:
    return _audits([row])[0]


def _instance(row: tuple[Any, ...]) -> Instance:
    return Instance(
        id=row[0],
        pid=row[1],
        process_create_time=row[2],
        host=row[3],
        started_at=_time(row[4]),
        last_seen=_time(row[5]),
        ended_at=_time(row[6]),
        state=row[7],
        last_seq=row[8] or 0,
        rejected=row[9] or 0,
        boot_id=row[10],
    )


def _operation_name(raw: object) -> str | None:
    """The name in `raw` if it is one msgpack [name: str, payload] operation, else None.

    The writer stores a rejected operation that way; a rejected whole message (a 4-item
    array) or bytes that are not msgpack at all give None, and nothing here raises.
    """
    if type(raw) is not bytes:
        return None
    unpacker = msgpack.Unpacker(raw=False)
    try:
        unpacker.feed(raw)
        if unpacker.read_array_header() != 2:
            return None
        name = unpacker.unpack()
        unpacker.skip()  # the payload: checked to be complete, never built
    except Exception:  # the unpacker raises several types for malformed bytes
        return None
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return name if type(name) is str else None  # exactly two items, nothing after them
    except Exception:
        return None
    return None  # bytes after the operation: not one the writer stored


def _rejection(row: tuple[Any, ...]) -> Rejection:
    return Rejection(
        id=row[0],
        received_at=_time(row[1]),
        instance_id=row[2],
        seq=row[3],
        operation=_operation_name(row[5]),
        reason=row[4],
    )


def _count(value: object, what: str) -> int:
    """`value` if it is a non-negative int, else a CallerError that says what was wrong."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return int(value)  # an int subclass (IntEnum, ...): its plain value
    raise CallerError(f"{what} must be a non-negative int, got {value!r}")


def _page(limit: int | None, offset: int) -> tuple[int, int]:
    """LIMIT and OFFSET for SQLite from a checked limit (None: all rows, -1) and offset."""
    return (-1 if limit is None else _count(limit, "limit (or None for all)")), _count(offset, "offset")


# How often a thread's connection checks that the path still leads to the file it opened.
FILE_IDENTITY_CHECK_S = 0.5


def _identity_of(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


# A connection must not be used on both sides of a fork. Counting forks in the child is
# cheaper than asking for the pid on every query (os.getpid is a system call).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_count_fork)


class Reader:
    """Read-only access to a see-persistence database; usable from several threads.

    Each thread gets its own `mode=ro` connection in autocommit, so no read transaction is
    left open to starve checkpoints. Opening is lazy: a file that does not exist yet raises
    FileNotFoundError (with the path) when first queried.
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        self.db_path: Path = locations.resolve_db_path(db_path)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        # (connection, _forks when opened, the file's identity, when it was last compared):
        # a forked child opens its own connection, and so does a thread whose file was
        # deleted, moved away or replaced (by a restore): an open connection keeps reading the
        # old inode, and nothing errors.
        state: list[Any] | None = getattr(self._local, "state", None)
        if state is not None and state[1] == _forks:
            now = time.monotonic()
            if now - state[3] < FILE_IDENTITY_CHECK_S:
                return state[0]  # type: ignore[no-any-return]
            state[3] = now
            if _identity_of(self.db_path) == state[2]:
                return state[0]  # type: ignore[no-any-return]
            state[0].close()
            self._local.state = None  # if the open below fails, the next query tries again
            log.info("%s is another file than the one this Reader had open: reopening", self.db_path)
        conn = open_read_only(self.db_path)
        self._local.state = [conn, _forks, _identity_of(self.db_path), time.monotonic()]
        self._local.columns = set()  # what this connection has seen of the file's tables
        return conn

    def recheck_file(self) -> None:
        """Make this thread's next query check that the path still leads to the file it has open.

        (Queries check it at most every FILE_IDENTITY_CHECK_S on their own.)
        """
        state: list[Any] | None = getattr(self._local, "state", None)
        if state is not None:
            state[3] = float("-inf")

    def _has(self, table: str, column: str = "id") -> bool:
        """True if the file has `table` with `column` (by default: has the table at all).

        A file may come from the Rust core (the seed's tables only) or an older writer. The
        schema only ever grows, so a column once seen is remembered for the connection and
        never looked up again; one not seen yet is looked up on each call, because a writer
        may upgrade the file at any moment.
        """
        self._conn()  # first: it resets what is remembered when it opens a connection
        seen: set[tuple[str, str]] = self._local.columns
        if (table, column) in seen:
            return True
        names = {row[1] for row in self._fetch(f"PRAGMA table_info({table})")}
        seen.update((table, name) for name in names)
        return column in names

    def _instances(self, where: str = "", params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of `instances` (with `rejected`, 0 if the file has none); [] if it has no such table."""
        if not self._has("instances"):
            return []
        rejected = self._has("instances", "rejected")
        # boot_id comes with rejected, in one upgrade: the table_info read that found (or is
        # still looking for) `rejected` lists it too. A lookup of its own would repeat on every
        # call on a file stamped 4 before boot_id joined that version; such a file reads NULL
        # (the host-name rule) until the connection is opened again.
        boot = ("instances", "boot_id") in self._local.columns
        return self._fetch(_INSTANCE_SELECT[rejected, boot] + where, params)

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn().execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        state = getattr(self._local, "state", None)
        if state is not None:
            state[0].close()
            self._local.state = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ---------------------------------------------------------------------------

    def get_workflow(self, workflow_id: str) -> WorkflowExecution | None:
        """The workflow with this id, or None."""
        rows = self._fetch(_SQL_WORKFLOW, (workflow_id,))
        return _workflow(rows[0]) if rows else None

    def list_workflows(
        self,
        limit: int = 100,
        offset: int = 0,
        status: Status | str | None = None,
        instance_id: str | None = None,
    ) -> list[WorkflowExecution]:
        """At most `limit` workflows after the newest `offset`, newest first (created_at, then id).

        Optionally only those with `status`, or from `instance_id`, or both. `limit` and
        `offset` are non-negative ints (else CallerError). Each page is read from an index in
        this order, so its cost grows with limit + offset, not with the table.
        """
        params: list[Any] = []
        if status is not None:
            params.append(Status.parse(status).value)
        if instance_id is not None:
            params.append(instance_id)
        params.append(_count(limit, "limit"))
        params.append(_count(offset, "offset"))
        sql = _SQL_NEWEST_WORKFLOWS[status is not None, instance_id is not None]
        return _workflows(self._fetch(sql, params))

    def get_workflows_for_instance(
        self, instance_id: str, limit: int | None = 100, offset: int = 0
    ) -> list[WorkflowExecution]:
        """The workflows one instance created, newest first, a page of `limit` (None: all)."""
        params = (instance_id, *_page(limit, offset))
        return _workflows(self._fetch(_SQL_WORKFLOWS_OF_INSTANCE, params))

    def get_tasks_for_workflow(
        self, workflow_id: str, limit: int | None = None, offset: int = 0
    ) -> list[TaskExecution]:
        """The tasks of a workflow by execution_order, then created_at: all (limit None) or a page.

        Each task's `logs` is its whole log, `task_log_lines` included (protocol/task_logs.py).
        """
        if limit is None and type(offset) is int and offset == 0:
            rows = self._fetch(_SQL_TASKS_OF_WORKFLOW, (workflow_id,))
        else:
            rows = self._fetch(_SQL_TASKS_OF_WORKFLOW_PAGE, (workflow_id, *_page(limit, offset)))
        tasks = _tasks(rows)
        for index, row in enumerate(rows):
            # A full column says where the rest of its log is: only then is the side table read.
            if type(row[10]) is str and _LOG_CONTINUED_JSON in row[10]:
                tasks[index] = self._whole_log(tasks[index])
        return tasks

    def _whole_log(self, task: TaskExecution) -> TaskExecution:
        """`task` with the lines its `logs` column could not hold (protocol/task_logs.py) in place."""
        if task_logs.continued_at(task.logs) is None or not self._has(task_logs.LOG_LINES_TABLE, "task_id"):
            return task
        # Read after the row, in a statement of its own: lines committed in between come too.
        # The log only ever grows at its end, so this is the log as of a moment later.
        lines = [line for (line,) in self._fetch(task_logs.SELECT_LINES, (task.id,))]
        if not lines:
            return task  # a line that reads like the marker, and nothing spilled
        return task.model_copy(update={"logs": task_logs.whole_log(task.logs, lines)})

    def get_audit_event(self, event_id: str) -> AuditEvent | None:
        """The audit event with this id, or None."""
        rows = self._fetch(_SQL_AUDIT_EVENT, (event_id,))
        return _audit(rows[0]) if rows else None

    def get_audit_trail(
        self, workflow_id: str, limit: int | None = None, offset: int = 0
    ) -> list[AuditEvent]:
        """The audit events of a workflow by timestamp, then id: all (limit None) or a page."""
        if limit is None and type(offset) is int and offset == 0:
            return _audits(self._fetch(_SQL_AUDIT_TRAIL, (workflow_id,)))
        return _audits(self._fetch(_SQL_AUDIT_TRAIL_PAGE, (workflow_id, *_page(limit, offset))))

    def get_rejections(
        self, instance_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Rejection]:
        """Operations the writer refused (dead letters), newest first, optionally of one instance.

        `operation` is the refused operation's name, or None when the row holds a whole
        message or bytes that are not one operation. A file without `dead_letters` (made by
        the Rust core) has none.
        """
        page = (_count(limit, "limit"), _count(offset, "offset"))
        if not self._has("dead_letters"):
            return []
        if instance_id is None:
            rows = self._fetch(_SQL_REJECTIONS, page)
        else:
            rows = self._fetch(_SQL_REJECTIONS_OF_INSTANCE, (instance_id, *page))
        return [_rejection(r) for r in rows]

    # -- instances and the writer ------------------------------------------------------------

    def get_instances(self, limit: int | None = None, offset: int = 0) -> list[Instance]:
        """Registered instances, live, ended or dead, most recently started first: all or a page.

        Empty on a file without `instances` (made by the Rust core, before any writer of ours).
        """
        page = _page(limit, offset)
        return [_instance(r) for r in self._instances(_SQL_INSTANCES_PAGE, page)]

    def get_instance(self, instance_id: str) -> Instance | None:
        """The registered instance with this id, or None."""
        rows = self._instances(" WHERE id = ?", (instance_id,))
        return _instance(rows[0]) if rows else None

    def get_active_instances(self) -> list[Instance]:
        """Instances registered live whose process still runs (pid, create time and boot checked)."""
        rows = self._instances(" WHERE state = 'live' ORDER BY started_at")
        return [_instance(r) for r in rows if leases.is_alive(r[1], r[2], r[3], r[10])]

    def get_instance_stats(self) -> InstanceStats:
        """Total workflows, live instances, and how many workflows each live instance has."""
        total = self._fetch("SELECT COUNT(*) FROM workflow_executions")[0][0]
        active = self.get_active_instances()
        per_instance: dict[str, int] = {}
        for instance in active:
            per_instance[instance.id] = self._fetch(
                "SELECT COUNT(*) FROM workflow_executions WHERE instance_id = ?", (instance.id,)
            )[0][0]
        return InstanceStats(
            total_workflows=total, active_instances=len(active), workflows_per_instance=per_instance
        )

    def watch(
        self,
        workflow_id: str | None = None,
        kinds: Iterable[str] | None = None,
        instance_id: str | None = None,
        *,
        max_pending: int = 4096,
        poll_interval_s: float = 0.25,
    ) -> Watcher:
        """Watch the changes committed from now on (a Watcher: get/iterate, or fileno + poll).

        Its first item is a Resync(STARTED): read what you show, then apply the changes that
        follow. Filters: one workflow (its record, tasks, logs and audit events), kinds of
        record (ChangeKind values), one instance's records. Close it when done (or use `with`).
        """
        from .watch import Watcher

        return Watcher(
            self.db_path,
            workflow_id=workflow_id,
            kinds=kinds,
            instance_id=instance_id,
            max_pending=max_pending,
            poll_interval_s=poll_interval_s,
        )

    def get_writer_status(self) -> WriterStatus | None:
        """The writer lease and whether its holder is alive; None if no writer ever ran."""
        if not self._has("writer_lease"):  # a file no writer of ours has upgraded yet
            return None
        # boot_id and heartbeat_boot_ns came with schema version 4: NULL on an older file.
        boot_columns = "boot_id, heartbeat_boot_ns" if self._has("writer_lease", "boot_id") else "NULL, NULL"
        # endpoints and public_key came with schema version 8.
        tcp_columns = "endpoints, public_key" if self._has("writer_lease", "public_key") else "NULL, NULL"
        rows = self._fetch(
            "SELECT pid, process_create_time, host, endpoint, epoch, acquired_at, heartbeat_at,"
            f" released_at, {boot_columns}, {tcp_columns} FROM writer_lease WHERE id = 1"
        )
        if not rows:
            return None
        pid, ctime, host, endpoint, epoch, acquired, heartbeat, released, boot, boot_ns = rows[0][:10]
        endpoints_json, public_key = rows[0][10:]
        alive = released is None and leases.is_alive(pid, ctime, host, boot)
        heartbeat_at = _time(heartbeat)
        heartbeat_us = int(heartbeat_at.timestamp() * 1_000_000)
        age_s = leases.silence_s(heartbeat_us, leases.wall_clock_us(), boot, boot_ns)
        return WriterStatus(
            pid=pid,
            host=host,
            endpoint=endpoint,
            epoch=epoch,
            since=_time(acquired),
            heartbeat=heartbeat_at,
            released=_time(released),
            alive=alive,
            boot_id=boot,
            heartbeat_age_s=round(age_s, 3),
            endpoints=_endpoint_pairs(endpoints_json),
            public_key=public_key,
        )

    def get_counters(self) -> dict[str, int]:
        """The `counters` table as a dict (the writer's published counters are `writer.*`)."""
        if not self._has("counters", "name"):  # a file from before schema version 3
            return {}
        return dict(self._fetch("SELECT name, value FROM counters ORDER BY name"))

    def count_rows(self) -> dict[str, int]:
        """Row counts of the layer's tables that exist in this file."""
        names = [r[0] for r in self._fetch("SELECT name FROM sqlite_master WHERE type = 'table'")]
        wanted = ["workflow_executions", "task_executions", "audit_events", "instances", "dead_letters"]
        return {n: self._fetch(f'SELECT COUNT(*) FROM "{n}"')[0][0] for n in wanted if n in names}

    # -- raw SQL ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only SQL statement and return its rows; a write raises ReadOnlyViolation."""
        conn = self._conn()
        authorizer = ReadOnlyAuthorizer()
        conn.set_authorizer(authorizer)
        try:
            return self._fetch(sql, params)
        except sqlite3.DatabaseError as exc:
            if authorizer.denied or is_read_only_error(exc):
                raise ReadOnlyViolation(f"Reader.query runs read-only SQL only: {exc}") from exc
            raise
        finally:
            _clear_authorizer(conn)
