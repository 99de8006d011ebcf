"""Read-only queries over a mode=ro connection, and live views of the changes; never imports the writer."""

from typing import TYPE_CHECKING

from ..protocol.lazy import lazy_attributes

if TYPE_CHECKING:
    from .queries import Reader
    from .watch import Change, ChangeKind, Resync, ResyncCause, Watcher, WatcherStats
    from .writer_state import WriterLease

# Each name loads its module on first use. The Reader brings the record models (pydantic, a
# tenth of a second; WriterLease does not) and the live views bring zmq and the keys: a
# process that needs only a part of this package (`query` runs its SQL through readonly.py)
# pays for that part.
_SUBMODULES = {
    "Reader": ".queries",
    "Change": ".watch",
    "ChangeKind": ".watch",
    "Resync": ".watch",
    "ResyncCause": ".watch",
    "Watcher": ".watch",
    "WatcherStats": ".watch",
    "WriterLease": ".writer_state",
}


__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES, globals())

__all__ = [
    "Change",
    "ChangeKind",
    "Reader",
    "Resync",
    "ResyncCause",
    "Watcher",
    "WatcherStats",
    "WriterLease",
]
