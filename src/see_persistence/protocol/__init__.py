"""The contract between processes, with no I/O: models, statuses, operations, codec, schema.

Nothing here opens a socket or a file or reads a clock; everything else imports it.
"""

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
from .models import AuditEvent, Instance, InstanceStats, TaskExecution, WorkflowExecution, WriterStatus
from .operations import OPERATIONS, validate_operation
from .schema import SCHEMA_VERSION
from .status import STATUS_EFFECTS, Status, StatusEffect

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
