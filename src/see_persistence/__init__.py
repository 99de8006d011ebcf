"""see-persistence: many GUI processes record workflow runs into one SQLite file through one
elected writer, and read them back without ever waiting on each other or on the disk.

    from see_persistence import Client, Reader, Writer, Status
"""

from .client import Client, ClientStats, TaskRun, WorkflowRun
from .protocol import (
    AuditEvent,
    CallerError,
    ClientClosed,
    Instance,
    InstanceStats,
    InvalidOperation,
    LeaseHeldError,
    LeaseLostError,
    ReadOnlyViolation,
    SeePersistenceError,
    Status,
    TaskExecution,
    WorkflowExecution,
    WriterStatus,
)
from .reader import Reader
from .writer import Writer

__version__ = "0.1.0"

__all__ = [
    "AuditEvent",
    "CallerError",
    "Client",
    "ClientClosed",
    "ClientStats",
    "Instance",
    "InstanceStats",
    "InvalidOperation",
    "LeaseHeldError",
    "LeaseLostError",
    "ReadOnlyViolation",
    "Reader",
    "SeePersistenceError",
    "Status",
    "TaskExecution",
    "TaskRun",
    "WorkflowExecution",
    "WorkflowRun",
    "Writer",
    "WriterStatus",
    "__version__",
]
