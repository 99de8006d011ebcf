"""Read-only queries over a mode=ro connection, and live views of the changes; never imports the writer."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .queries import Reader
    from .watch import Change, ChangeKind, Resync, ResyncCause, Watcher, WatcherStats

# Each name loads its module on first use. The Reader brings the record models (pydantic, a
# tenth of a second) and the live views bring zmq and the keys: a process that needs only a
# part of this package (`query` runs its SQL through readonly.py) pays for that part.
_SUBMODULES = {
    "Reader": "queries",
    "Change": "watch",
    "ChangeKind": "watch",
    "Resync": "watch",
    "ResyncCause": "watch",
    "Watcher": "watch",
    "WatcherStats": "watch",
}


def __getattr__(name: str) -> Any:
    module = _SUBMODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = ["Change", "ChangeKind", "Reader", "Resync", "ResyncCause", "Watcher", "WatcherStats"]
