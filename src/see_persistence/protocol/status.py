"""Status values and, in one table, what each status change sets on a record.

Everything that decides which columns a status change touches lives here, so the
writer's SQL, the Client's checks and the tests read the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    """The lifecycle of a workflow or task; compares equal to its lowercase text."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Status:
        """Return the Status for `value` (a Status or its text); raise ValueError otherwise."""
        if isinstance(value, Status):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        allowed = ", ".join(s.value for s in cls)
        raise ValueError(f"unknown status {value!r}: expected one of {allowed}")


@dataclass(frozen=True)
class StatusEffect:
    """What applying a status sets besides the status column itself."""

    sets_started_at: bool  # started_at = the change's time, unless already set
    sets_completed_at: bool  # completed_at = the change's time
    success: bool | None  # the success column becomes 1 / 0; None leaves it as it is


STATUS_EFFECTS: dict[Status, StatusEffect] = {
    Status.PENDING: StatusEffect(sets_started_at=False, sets_completed_at=False, success=None),
    Status.RUNNING: StatusEffect(sets_started_at=True, sets_completed_at=False, success=None),
    Status.COMPLETED: StatusEffect(sets_started_at=False, sets_completed_at=True, success=True),
    Status.FAILED: StatusEffect(sets_started_at=False, sets_completed_at=True, success=False),
    # A cancelled run did not succeed, and it is over: the Rust core reads it as finished.
    Status.CANCELLED: StatusEffect(sets_started_at=False, sets_completed_at=True, success=False),
}

ACTIVE_STATUSES: tuple[Status, ...] = (Status.PENDING, Status.RUNNING)
"""Statuses of records that an instance's death leaves abandoned."""

FINISHED_STATUSES: tuple[Status, ...] = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
"""Statuses of workflows that retention may delete; an active workflow is never pruned."""
