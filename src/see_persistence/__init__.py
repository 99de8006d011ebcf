"""see-persistence: many GUI processes record workflow runs into one SQLite file through one
elected writer, and read them back without ever waiting on each other or on the disk.

    from see_persistence import Client, Reader, Writer, Status

GUI code may share one Client and one Reader per process instead: `configure(db_path)` once
at start-up, then `get_client()` and `get_reader()` from any thread (see defaults.py).
"""

import importlib
from typing import TYPE_CHECKING

from .protocol.errors import (
    BackendUnavailable,
    CallerError,
    ClientClosed,
    DefaultsInUse,
    InvalidOperation,
    LeaseHeldError,
    LeaseLostError,
    ReadOnlyViolation,
    SeePersistenceError,
    WatcherHasCallback,
)
from .protocol.lazy import lazy_attributes
from .protocol.status import Status

if TYPE_CHECKING:
    from .client import Client, ClientStats, TaskRun, WorkflowRun
    from .defaults import close_defaults, configure, get_client, get_reader
    from .protocol.models import (
        AuditEvent,
        Instance,
        InstanceStats,
        JsonValue,
        Rejection,
        TaskExecution,
        WorkflowExecution,
        WriterStatus,
    )
    from .reader import Change, ChangeKind, Reader, Resync, ResyncCause, Watcher, WatcherStats
    from .writer import Writer

# Loaded on first use, so that each process pays only for what it uses: the writer process
# never loads the client or the record models (pydantic builds them for 14 MB of memory).
_LAZY = {
    "Client": ".client",
    "ClientStats": ".client",
    "TaskRun": ".client",
    "WorkflowRun": ".client",
    "Reader": ".reader",
    "Change": ".reader",
    "ChangeKind": ".reader",
    "Resync": ".reader",
    "ResyncCause": ".reader",
    "Watcher": ".reader",
    "WatcherStats": ".reader",
    "Writer": ".writer",
    "configure": ".defaults",
    "get_client": ".defaults",
    "get_reader": ".defaults",
    "close_defaults": ".defaults",
    "AuditEvent": ".protocol.models",
    "Instance": ".protocol.models",
    "InstanceStats": ".protocol.models",
    "JsonValue": ".protocol.models",
    "Rejection": ".protocol.models",
    "TaskExecution": ".protocol.models",
    "WorkflowExecution": ".protocol.models",
    "WriterStatus": ".protocol.models",
}


def _models_with_the_reader(name: str) -> None:
    if name == "Reader":
        # The package's own processes (commands, the client) load the record models on a
        # Reader's first record; a GUI that imports the Reader from here gets them now, as it
        # always did, so that its first read is not the one that pays for them.
        importlib.import_module(".reader.rows", __name__)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), _models_with_the_reader)

# The only place the version is written: pyproject.toml reads it from here (a literal, so
# setuptools can read it without importing). Bump it together with CHANGELOG.md.
__version__ = "0.1.0"

__all__ = [
    "AuditEvent",
    "BackendUnavailable",
    "CallerError",
    "Change",
    "ChangeKind",
    "Client",
    "ClientClosed",
    "ClientStats",
    "DefaultsInUse",
    "Instance",
    "InstanceStats",
    "InvalidOperation",
    "JsonValue",
    "LeaseHeldError",
    "LeaseLostError",
    "ReadOnlyViolation",
    "Reader",
    "Rejection",
    "Resync",
    "ResyncCause",
    "SeePersistenceError",
    "Status",
    "TaskExecution",
    "TaskRun",
    "Watcher",
    "WatcherHasCallback",
    "WatcherStats",
    "WorkflowExecution",
    "WorkflowRun",
    "Writer",
    "WriterStatus",
    "__version__",
    "close_defaults",
    "configure",
    "get_client",
    "get_reader",
]
