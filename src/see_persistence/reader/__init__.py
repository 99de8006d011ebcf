"""Read-only queries over a mode=ro connection, and live views of the changes; never imports the writer."""

from .queries import Reader
from .watch import Change, ChangeKind, Resync, ResyncCause, Watcher, WatcherStats

__all__ = ["Change", "ChangeKind", "Reader", "Resync", "ResyncCause", "Watcher", "WatcherStats"]
