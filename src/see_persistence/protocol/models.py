"""The records as a Reader returns them: pydantic v2 models with the S_E_E seed's fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import core_schema

from .status import Status

_FROZEN = ConfigDict(frozen=True, extra="ignore")


def _serialized_as_any(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # Validated as the union, serialized by the value's own type: a union serializer first
    # tries each member to pick one, which doubled model_dump_json for a nested object.
    return {**handler(source), "serialization": core_schema.simple_ser_schema("any")}


_JSON_UNION: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
_JSON_KINDS: dict[type, str] = {
    dict: "dict",
    list: "list",
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    type(None): "none",
}


def _json_kind(value: Any) -> str:
    # One dict lookup picks the member a value of exactly that type would match. A plain union
    # tries its members in turn (lax: several passes) and was most of a Reader model's
    # validation; any other type (a tuple, bytes, a subclass) takes the whole union as before.
    return _JSON_KINDS.get(type(value), "other")


JsonValue: TypeAlias = Annotated[
    Annotated[dict[str, Any], Tag("dict")]
    | Annotated[list[Any], Tag("list")]
    | Annotated[str, Tag("str")]
    | Annotated[int, Tag("int")]
    | Annotated[float, Tag("float")]
    | Annotated[bool, Tag("bool")]
    | Annotated[None, Tag("none")]
    | Annotated[_JSON_UNION, Tag("other")],
    Discriminator(_json_kind),
    # Described as the union it validates: the tagged members overlap, so no "oneOf" of them.
    WithJsonSchema(TypeAdapter(_JSON_UNION).json_schema()),
    GetPydanticSchema(_serialized_as_any),
]
"""One JSON value as json.loads gives it; isinstance(value, dict) tells an object from the rest.

Only the outer type is checked (nested values are what JSON decoding made them): a recursive
check, as pydantic.JsonValue does, costs ten times as much on a nested object. Validation
accepts and converts what `dict[str, Any] | list[Any] | str | int | float | bool | None`
does, in lax and strict mode alike; a value of one of those exact types goes straight to its
own member (measured: a 50-row page of workflows validated in 2/3 of the time the plain union
took), anything else through the whole union.
"""


class WorkflowExecution(BaseModel):
    """One run of a workflow (a row of `workflow_executions`).

    `metadata` is the JSON value the row holds, as it was stored: an object (a dict) when
    this package wrote it, since its Client takes only dicts, but the S_E_E seed lets the
    app's Rust core store any JSON value, so it may also be a list, a str, a number, a bool
    or None (JSON `null`). Tell them apart with isinstance(metadata, dict). A NULL column
    reads as {} (the seed's "no metadata"), and text that is not JSON at all as that text,
    a str (so a str is either a JSON string or such text; SQLite's json_valid() tells which).
    """

    model_config = _FROZEN

    id: str
    workflow_name: str
    status: Status
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    success: bool | None = None
    error_message: str | None = None
    metadata: JsonValue = Field(default_factory=dict)
    instance_id: str | None = None
    last_updated: datetime | None = None


class TaskExecution(BaseModel):
    """One task of a workflow run (a row of `task_executions`).

    `logs` holds the items of the row's JSON array as they were stored: strs when this
    package wrote them, any JSON value when another writer stored one (`["a", 1, null]`
    reads as ["a", 1, None]). A NULL column or JSON `null` reads as [] (no logs); another
    JSON value as a list of that one value, and text that is not JSON as a list of that text.
    It is the whole log: past the column's bound (protocol/task_logs.py) the writer keeps the
    lines in `task_log_lines`, and the Reader puts them where the column's marker item is.
    """

    model_config = _FROZEN

    id: str
    workflow_id: str
    task_name: str
    status: Status
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    success: bool | None = None
    error_message: str | None = None
    output: str | None = None
    logs: list[JsonValue] = Field(default_factory=list)
    retry_count: int = 0
    execution_order: int = 0
    instance_id: str | None = None
    last_updated: datetime | None = None


class AuditEvent(BaseModel):
    """One entry of the audit trail (a row of `audit_events`).

    `data` is the JSON value the row holds, read as WorkflowExecution.metadata is: a dict
    when this package wrote it, any JSON value (isinstance(data, dict) tells) from another
    writer, {} for a NULL column, and the text itself for text that is not JSON.
    """

    model_config = _FROZEN

    id: str
    workflow_id: str | None = None
    task_id: str | None = None
    event_type: str
    message: str
    timestamp: datetime
    data: JsonValue = Field(default_factory=dict)
    instance_id: str | None = None


class Instance(BaseModel):
    """A GUI instance that registered with the writer (a row of `instances`)."""

    model_config = _FROZEN

    id: str
    pid: int | None = None
    process_create_time: float | None = None
    host: str | None = None
    started_at: datetime | None = None
    last_seen: datetime | None = None
    ended_at: datetime | None = None
    state: str
    last_seq: int = 0
    rejected: int = 0  # operations of this instance the writer refused (see Reader.get_rejections)
    boot_id: str | None = None  # the boot its process ran in (None: registered before boot ids)
    # Where its pid means something (leases.host_id; None: registered before host ids). Another
    # than the writer's: the instance lives while the writer hears from it.
    host_id: str | None = None
    last_heard_at: datetime | None = None  # the writer's clock when it last heard from it
    clock_skew_us: int | None = None  # the writer's clock minus the instance's (from its heartbeats)


class Rejection(BaseModel):
    """An operation the writer refused, and why (a row of `dead_letters`)."""

    model_config = _FROZEN

    id: int
    received_at: datetime
    instance_id: str | None = None
    seq: int | None = None
    operation: str | None = None  # the operation's name, when its bytes could be read
    reason: str


class InstanceStats(BaseModel):
    """Counts across instances: all workflows, live instances, workflows of each live instance."""

    model_config = _FROZEN

    total_workflows: int
    active_instances: int
    workflows_per_instance: dict[str, int]


class WriterStatus(BaseModel):
    """The writer lease as a Reader sees it; `alive` is checked against the process table.

    `heartbeat_age_s` is the time since the last heartbeat on CLOCK_BOOTTIME when the holder
    is of this boot, which no wall-clock step moves; else `now - heartbeat` on the wall clock.
    """

    model_config = _FROZEN

    pid: int
    host: str
    endpoint: str
    epoch: int
    since: datetime
    heartbeat: datetime
    released: datetime | None = None
    alive: bool
    boot_id: str | None = None  # the holder's boot (None: a lease from before boot ids)
    host_id: str | None = None  # the holder's leases.host_id (None: a writer from before schema 9)
    heartbeat_age_s: float | None = None
    # Every (pull, pub) endpoint pair the holder bound, and its CURVE public key if it listens
    # on TCP (empty / None: a writer from before schema version 8, or one still binding).
    endpoints: tuple[tuple[str, str], ...] = ()
    public_key: str | None = None
