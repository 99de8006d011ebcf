"""The Reader: read-only queries over a mode=ro connection, returned as the protocol's models.

(Plain values where a caller needs no models: list_workflow_rows, query, and what a Client
reads, writer_lease and instance_progress.)

Each concern lives in its own module and gives the Reader its methods: workflows.py,
tasks.py, audit.py, rejections.py, instances.py and writer_state.py; connection.py holds the
per-thread connection they share, rows.py turns rows into models, readonly.py decides what
raw SQL may do.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import backends, locations
from ..protocol.errors import ReadOnlyViolation
from .audit import AuditQueries
from .connection import FILE_IDENTITY_CHECK_S, ReadConnection
from .instances import InstanceQueries
from .readonly import ReadOnlyAuthorizer, clear_authorizer, is_read_only_error
from .rejections import RejectionQueries
from .tasks import TaskQueries
from .workflows import WorkflowQueries
from .writer_state import WriterStateQueries

if TYPE_CHECKING:
    from .watch import Change, Resync, Watcher

__all__ = ["FILE_IDENTITY_CHECK_S", "ReadOnlyAuthorizer", "Reader", "is_read_only_error"]


class Reader(
    WorkflowQueries,
    TaskQueries,
    AuditQueries,
    RejectionQueries,
    InstanceQueries,
    WriterStateQueries,
    ReadConnection,
):
    """Read-only access to a see-persistence database; usable from several threads.

    Each thread gets its own `mode=ro` connection in autocommit, so no read transaction is
    left open to starve checkpoints. Opening is lazy: a file that does not exist yet raises
    FileNotFoundError (with the path) when first queried.

    Given a `postgresql://` URL (as the argument or $SEE_PERSISTENCE_DB) it is a PostgresReader
    (reader/postgresql.py): the same methods and models, through a pool of read-only
    connections. Such a URL needs the `[postgresql]` extra (BackendUnavailable says so).
    """

    read_errors: tuple[type[BaseException], ...] = (FileNotFoundError, sqlite3.Error)
    """What a query raises when the database cannot be read now (no file yet, no server)."""

    def __new__(cls, db_path: str | os.PathLike[str] | None = None) -> Reader:
        if cls is Reader and _names_a_server(db_path):
            from .postgresql import PostgresReader  # psycopg is imported only for a URL

            return super().__new__(PostgresReader)
        return super().__new__(cls)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def watch(
        self,
        workflow_id: str | None = None,
        kinds: Iterable[str] | None = None,
        instance_id: str | None = None,
        *,
        max_pending: int = 4096,
        poll_interval_s: float = 0.25,
        on_change: Callable[[Change | Resync], object] | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
    ) -> Watcher:
        """Watch the changes committed from now on (a Watcher: get/iterate, or fileno + poll).

        Its first item is a Resync(STARTED): read what you show, then apply the changes that
        follow. Filters: one workflow (its record, tasks, logs and audit events), kinds of
        record (ChangeKind values), one instance's records. Close it when done (or use `with`).

        With `on_change`, a thread of the watcher calls `on_change(item)` for every item, in
        order, from the first; an exception it raises is logged and delivery goes on. Given
        here rather than set later so that it sees the very first item and no other consumer
        can take one before it; get(), poll() and iteration are then refused.

        Over TCP (the Client's rule: no ipc in libzmq, or $SEE_PERSISTENCE_TRANSPORT=tcp) it
        subscribes with this user's client key pair from `keys_dir` (keys.KeyStore), which the
        writer must allow; a refusal comes as a Resync(REFUSED).
        """
        return self._new_watcher(
            workflow_id=workflow_id,
            kinds=kinds,
            instance_id=instance_id,
            max_pending=max_pending,
            poll_interval_s=poll_interval_s,
            on_change=on_change,
            keys_dir=keys_dir,
        )

    def _new_watcher(self, **options: Any) -> Watcher:
        """The Watcher of this database (reader/watch.py; PostgresReader's is reader/watch_postgresql.py)."""
        from .watch import Watcher

        return Watcher(self.db_path, **options)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only SQL statement and return its rows; a write raises ReadOnlyViolation."""
        conn = self._conn()
        authorizer = ReadOnlyAuthorizer()
        conn.set_authorizer(authorizer)
        try:
            # On `conn` itself, not through _fetch: a reopen in between (the file's identity is
            # checked on each lookup) would run the statement without the authorizer.
            cursor = conn.execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.DatabaseError as exc:
            if authorizer.denied or is_read_only_error(exc):
                raise ReadOnlyViolation(f"Reader.query runs read-only SQL only: {exc}") from exc
            raise
        finally:
            clear_authorizer(conn)


def _names_a_server(db_path: str | os.PathLike[str] | None) -> bool:
    """True if `db_path` (or $SEE_PERSISTENCE_DB when it is None) is a database URL.

    Raises BackendUnavailable for a URL whose driver is not installed, saying what to install.
    """
    if db_path is None or str(db_path) == "":
        db_path = os.environ.get(locations.DB_ENV_VAR) or ""
    database = backends.parse_database(db_path)
    if database is None:
        return False
    backends.require_backend(database, backends.READER_AND_CLIENT_BACKENDS)
    return True
