"""The contract between processes, with no I/O: models, statuses, operations, codec, schema.

Nothing here opens a socket or a file or reads a clock; everything else imports it.
"""

from typing import TYPE_CHECKING, Any

from .codec import (
    MAX_MESSAGE_BYTES,
    MAX_OPERATIONS_PER_MESSAGE,
    PROTOCOL_VERSION,
    Envelope,
    decode_message,
    encode_message,
)
from .errors import (
    CallerError,
    ClientClosed,
    InvalidOperation,
    LeaseHeldError,
    LeaseLostError,
    ReadOnlyViolation,
    RejectedMessage,
    SeePersistenceError,
)
from .operations import OPERATIONS, validate_operation
from .schema import SCHEMA_VERSION
from .status import STATUS_EFFECTS, Status, StatusEffect

if TYPE_CHECKING:
    from .models import (
        AuditEvent,
        Instance,
        InstanceStats,
        Rejection,
        TaskExecution,
        WorkflowExecution,
        WriterStatus,
    )

# The record models load on first use: building them costs pydantic about 14 MB and a tenth
# of a second, which the writer process, which never returns a record, does not pay.
_MODELS = frozenset(
    {
        "AuditEvent",
        "Instance",
        "InstanceStats",
        "Rejection",
        "TaskExecution",
        "WorkflowExecution",
        "WriterStatus",
    }
)


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_OPERATIONS_PER_MESSAGE",
    "OPERATIONS",
    "PROTOCOL_VERSION",
    "SCHEMA_VERSION",
    "STATUS_EFFECTS",
    "AuditEvent",
    "CallerError",
    "ClientClosed",
    "Envelope",
    "Instance",
    "InstanceStats",
    "InvalidOperation",
    "LeaseHeldError",
    "LeaseLostError",
    "ReadOnlyViolation",
    "RejectedMessage",
    "Rejection",
    "SeePersistenceError",
    "Status",
    "StatusEffect",
    "TaskExecution",
    "WorkflowExecution",
    "WriterStatus",
    "decode_message",
    "encode_message",
    "validate_operation",
]
