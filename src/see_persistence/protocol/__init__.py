"""The contract between processes, with no I/O: models, statuses, operations, codec, schema.

Nothing here opens a socket or a file or reads a clock; everything else imports it.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

if TYPE_CHECKING:
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
    from .models import (
        AuditEvent,
        Instance,
        InstanceStats,
        Rejection,
        TaskExecution,
        WorkflowExecution,
        WriterStatus,
    )
    from .operations import OPERATIONS, validate_operation
    from .schema import SCHEMA_VERSION
    from .status import STATUS_EFFECTS, Status, StatusEffect

# Each name loads its module on first use. Every process of the package imports this package
# (the errors live in it), and most need only a part: the record models cost pydantic about
# 14 MB and a tenth of a second, which the writer, which never returns a record, does not pay;
# the codec and the operations (msgpack, dataclasses, hashlib) cost a command that only reads
# about 20 ms of CPU.
_SUBMODULES = {
    "MAX_MESSAGE_BYTES": ".codec",
    "MAX_OPERATIONS_PER_MESSAGE": ".codec",
    "PROTOCOL_VERSION": ".codec",
    "Envelope": ".codec",
    "decode_message": ".codec",
    "encode_message": ".codec",
    "CallerError": ".errors",
    "ClientClosed": ".errors",
    "InvalidOperation": ".errors",
    "LeaseHeldError": ".errors",
    "LeaseLostError": ".errors",
    "ReadOnlyViolation": ".errors",
    "RejectedMessage": ".errors",
    "SeePersistenceError": ".errors",
    "AuditEvent": ".models",
    "Instance": ".models",
    "InstanceStats": ".models",
    "Rejection": ".models",
    "TaskExecution": ".models",
    "WorkflowExecution": ".models",
    "WriterStatus": ".models",
    "OPERATIONS": ".operations",
    "validate_operation": ".operations",
    "SCHEMA_VERSION": ".schema",
    "STATUS_EFFECTS": ".status",
    "Status": ".status",
    "StatusEffect": ".status",
}


__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES, globals())

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
