"""The records as a Reader returns them: pydantic v2 models with the S_E_E seed's fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .status import Status

_FROZEN = ConfigDict(frozen=True, extra="ignore")


class WorkflowExecution(BaseModel):
    """One run of a workflow (a row of `workflow_executions`)."""

    model_config = _FROZEN

    id: str
    workflow_name: str
    status: Status
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    success: bool | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    instance_id: str | None = None
    last_updated: datetime | None = None


class TaskExecution(BaseModel):
    """One task of a workflow run (a row of `task_executions`)."""

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
    logs: list[str] = Field(default_factory=list)
    retry_count: int = 0
    execution_order: int = 0
    instance_id: str | None = None
    last_updated: datetime | None = None


class AuditEvent(BaseModel):
    """One entry of the audit trail (a row of `audit_events`)."""

    model_config = _FROZEN

    id: str
    workflow_id: str | None = None
    task_id: str | None = None
    event_type: str
    message: str
    timestamp: datetime
    data: dict[str, Any] = Field(default_factory=dict)
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
    """The writer lease as a Reader sees it; `alive` is checked against the process table."""

    model_config = _FROZEN

    pid: int
    host: str
    endpoint: str
    epoch: int
    since: datetime
    heartbeat: datetime
    released: datetime | None = None
    alive: bool
