"""The error tree of see-persistence.

    SeePersistenceError
    ├── CallerError (ValueError)         a caller's mistake, raised at once in the calling process
    │   └── InvalidOperation             an operation payload that breaks the protocol's rules
    ├── RejectedMessage                  a peer's bytes that are not a valid message (dead-letter reason)
    ├── LeaseHeldError                   another live writer holds the lease
    ├── LeaseLostError                   this writer was fenced off (another writer took over)
    ├── ReadOnlyViolation (PermissionError)  a write statement sent through a Reader
    ├── ClientClosed (RuntimeError)      a write call on a Client after close()
    ├── WatcherHasCallback (RuntimeError)  get()/poll()/iteration on a Watcher that feeds a callback
    ├── DefaultsInUse (RuntimeError)     configure() with other settings once get_client()/get_reader() ran
    └── BackendUnavailable (RuntimeError)  a database URL whose backend this version or install lacks

The writer never raises the peer's errors: it stores their reason in `dead_letters`.
"""

from __future__ import annotations


class SeePersistenceError(Exception):
    """Base class of every error this package raises on purpose."""


class CallerError(SeePersistenceError, ValueError):
    """A caller passed something the protocol cannot carry (empty name, unknown status, ...)."""


class InvalidOperation(CallerError):
    """An operation's payload breaks a rule; `reason` is the one-line explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RejectedMessage(SeePersistenceError):
    """Bytes from a peer that do not form a valid message; `reason` goes to the dead-letter row."""

    def __init__(self, reason: str, *, instance_id: str | None = None, seq: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.instance_id = instance_id
        self.seq = seq


class LeaseHeldError(SeePersistenceError):
    """Another live writer holds the lease of this database."""

    def __init__(self, message: str, *, pid: int | None = None, host: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.host = host


class LeaseLostError(SeePersistenceError):
    """This writer no longer holds the lease: another writer took over (fencing)."""


class ReadOnlyViolation(SeePersistenceError, PermissionError):
    """A Reader was asked to run a statement that writes or changes the connection."""


class ClientClosed(SeePersistenceError, RuntimeError):
    """A write call reached a Client that was already closed."""


class WatcherHasCallback(SeePersistenceError, RuntimeError):
    """A Watcher made with `on_change` was asked for items another way: the callback takes them all."""


class DefaultsInUse(SeePersistenceError, RuntimeError):
    """configure() came, with other settings, after the process-wide Client or Reader was made."""


class BackendUnavailable(SeePersistenceError, RuntimeError):
    """A database was named by a URL (postgresql://) whose backend is not implemented or not installed."""
