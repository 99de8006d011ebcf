"""The Reader on PostgreSQL: the same queries and models, through a pool of read-only connections.

`Reader("postgresql://...")` is a PostgresReader. Every query method is the SQLite Reader's
own (workflows.py, tasks.py, ...), and rows.py builds the models: this module gives them what
ReadConnection gives them on SQLite, a `_fetch(sql, params)` and a `_has(table, column)`,
so nothing about a query is written twice and the SQLite Reader runs exactly as before.

What differs, and why:

- Connections come from a psycopg_pool pool (opened at the first query, so a Reader can be
  made before the server is up), in autocommit, each in a session whose
  `default_transaction_read_only` is on: every statement of the Reader's own runs in a
  read-only transaction of its own (one round trip, as an SQLite read in autocommit), and
  `query()` runs the caller's statement in an explicit `BEGIN READ ONLY` transaction.
- Values arrive as rows.py reads them from the SQLite file: a timestamptz as the writer's
  RFC 3339 text in UTC (the session's TimeZone is UTC; postgresql_sql.rfc3339_text), jsonb as
  its JSON text (keys in jsonb's order, as jsonb keeps values rather than spelling), booleans
  as bool (True == 1). So the models are equal field by field, datetimes in
  datetime.timezone.utc included, and `query()` and `list_workflow_rows()` give what they
  give on SQLite, except that JSON text is spelled as PostgreSQL prints it.
- LIMIT -1 (SQLite's "no limit") is LIMIT NULL (PostgreSQL's), and the nullable columns the
  Reader sorts by sort NULL first, as SQLite does (postgresql_sql.sqlite_null_order).
- A writer on another machine cannot be checked by its pid: its lease counts as alive while
  its heartbeat is younger than REMOTE_WRITER_STALE_AFTER_S.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg.adapt import Buffer, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from .. import backends, leases, locations
from ..protocol.errors import ReadOnlyViolation
from . import paging
from .postgresql_sql import qmark_to_psycopg, rfc3339_text, sqlite_null_order, user_statement
from .queries import Reader

if TYPE_CHECKING:
    from .watch import Watcher
    from .writer_state import WriterLease

log = logging.getLogger("see_persistence.reader")

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4  # threads reading at once; more wait for a connection (up to POOL_TIMEOUT_S)
POOL_TIMEOUT_S = 10.0  # waiting for a pooled connection, the first one included
CONNECT_TIMEOUT_S = 10  # libpq's connect_timeout, unless the URL sets its own
# The writer's lease goes stale after 5 s of silence (writer/lease.py, LEASE_STALE_AFTER_S,
# which the reader may not import); one a little longer here is never called dead too early.
REMOTE_WRITER_STALE_AFTER_S = 6.0
# Every session starts so: timestamps printed in UTC, and read-only unless told per transaction.
SESSION_OPTIONS = "-c TimeZone=UTC -c default_transaction_read_only=on"
# After a caller's statement: nothing it set may outlive it on a pooled connection. A session
# advisory lock taken through query() would otherwise stay held (and could be the writer's).
_SESSION_RESET = "SELECT pg_advisory_unlock_all(); RESET ALL"

_forks = 0  # a pool must not be used on both sides of a fork (see connection.py)


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_count_fork)


class Rfc3339Loader(Loader):
    """Loads a timestamptz as the SQLite writer's RFC 3339 text (postgresql_sql.rfc3339_text)."""

    def load(self, data: Buffer) -> str:
        """The instant in `data` (PostgreSQL's text form) as RFC 3339 text in UTC."""
        return rfc3339_text(bytes(data).decode("ascii"))


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.read_only = True  # what `with conn.transaction()` begins: BEGIN READ ONLY
    conn.adapters.register_loader("timestamptz", Rfc3339Loader)
    # JSON as text with the loader psycopg uses for text: its C one where psycopg has C.
    text_loader = conn.adapters.get_loader(conn.adapters.types["text"].oid, Format.TEXT) or TextLoader
    conn.adapters.register_loader("jsonb", text_loader)
    conn.adapters.register_loader("json", text_loader)


def _connection_options(url: str) -> dict[str, Any]:
    """The pool's connection arguments: the URL's own `options` kept, ours appended."""
    given = conninfo_to_dict(url)
    options = f"{given['options']} {SESSION_OPTIONS}" if given.get("options") else SESSION_OPTIONS
    extra: dict[str, Any] = {"autocommit": True, "options": options}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    return extra


_PAGE_TAIL = paging.PAGE_SQL.replace("?", "%s")


class PostgresReader(Reader):
    """A Reader of a PostgreSQL database: the SQLite Reader's API and models (module doc)."""

    read_errors: tuple[type[BaseException], ...] = (psycopg.Error, PoolTimeout)

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        database = locations.resolve_database(db_path, backends.READER_AND_CLIENT_BACKENDS)
        if not isinstance(database, backends.DatabaseURL):  # Reader.__new__ sends only URLs here
            raise TypeError(f"{database} is a file: Reader() reads it on SQLite")
        self.url: backends.DatabaseURL = database
        self.database = database
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_forks = _forks
        self._lock = threading.Lock()
        self._lock_forks = _forks
        self._columns: set[tuple[str, str]] = set()
        # Reader SQL (`?` placeholders) -> (psycopg SQL, ends with LIMIT ? OFFSET ?).
        self._statements: dict[str, tuple[str, bool]] = {}

    def __repr__(self) -> str:
        return f"PostgresReader({self.url.redacted()!r})"

    # -- connections -------------------------------------------------------------------------------

    def _current_lock(self) -> threading.Lock:
        if self._lock_forks != _forks:  # a thread of the parent may have held it at the fork
            self._lock, self._lock_forks = threading.Lock(), _forks
        return self._lock

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._current_lock():
            if self._pool is not None and self._pool_forks == _forks:
                return self._pool
            # A pool inherited through fork is left alone, not closed: closing would end the
            # parent's sessions, which share its sockets.
            url = self.url.url
            # One connection first, alone: a server that refuses (no such database, a wrong
            # password) says so at once, where the pool would retry until its timeout.
            psycopg.connect(url, **_connection_options(url)).close()
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                kwargs=_connection_options(url),
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                open=False,
                configure=_configure,
                timeout=POOL_TIMEOUT_S,
                name=f"see-persistence reader {self.url.redacted()}",
            )
            try:
                pool.open(wait=True, timeout=POOL_TIMEOUT_S)
            except PoolTimeout:
                pool.close(timeout=0)
                raise self._why_not_connected() from None
            self._pool, self._pool_forks = pool, _forks
            return pool

    def _why_not_connected(self) -> Exception:
        """The server's own reason for refusing a connection, which the pool only logs."""
        try:
            psycopg.connect(self.url.url, **_connection_options(self.url.url)).close()
        except psycopg.OperationalError as exc:
            return exc
        return PoolTimeout(f"no connection to {self.database} within {POOL_TIMEOUT_S:g} s")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is None or self._pool_forks != _forks:
            pool = self._open_pool()
        with pool.connection() as conn:
            yield conn

    def close(self) -> None:
        """Close the pool's connections (every thread's, unlike SQLite's); the next query opens a new pool."""
        with self._current_lock():
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_forks == _forks:
            pool.close()

    def recheck_file(self) -> None:
        """Nothing to do: a server has no file that could be replaced under the Reader."""

    # -- what the query mixins call ------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        statement = self._statements.get(sql)
        if statement is None:
            converted = qmark_to_psycopg(sqlite_null_order(sql))
            statement = self._statements[sql] = (converted, converted.endswith(_PAGE_TAIL))
        pg_sql, paged = statement
        if paged and params[-2] == -1:
            params = (*params[:-2], None, params[-1])  # LIMIT NULL: every row
        with self._connection() as conn:
            return conn.execute(pg_sql, params).fetchall()

    def _has(self, table: str, column: str = "id") -> bool:
        if (table, column) in self._columns:
            return True
        names = {
            name
            for (name,) in self._fetch(
                "SELECT attname::text FROM pg_attribute"
                " WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
        }
        self._columns.update((table, name) for name in names)
        return column in names

    def _seen(self, table: str, column: str) -> bool:
        return (table, column) in self._columns

    # -- what differs from SQLite ----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only SQL statement and return its rows; a write raises ReadOnlyViolation.

        `?` placeholders as on SQLite, or psycopg's `%s` / `%(name)s` (postgresql_sql.py). The
        statement runs alone (never several at once) in a READ ONLY transaction, which is what
        refuses a write; values come as on SQLite (module doc).
        """
        pg_sql, pg_params = user_statement(sql, params)
        with self._connection() as conn:
            try:
                with conn.transaction():
                    # prepare=True: the extended protocol even without parameters, which runs
                    # one statement only ("COMMIT; INSERT ..." cannot leave the transaction).
                    cursor = conn.execute(pg_sql, pg_params, prepare=True)
                    return cursor.fetchall() if cursor.description is not None else []
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                raise ReadOnlyViolation(f"Reader.query runs read-only SQL only: {exc}") from exc
            finally:
                conn.execute(_SESSION_RESET)

    def _new_watcher(self, **options: Any) -> Watcher:
        """A watcher as on SQLite, over the writer's TCP feed.

        Always over TCP with CURVE (this user's client key pair from `keys_dir`, which the
        writer must allow), where the lease row says the writer publishes; see
        reader/watch_postgresql.py for what differs from a file.
        """
        from .watch_postgresql import PostgresWatcher

        return PostgresWatcher(self.url, **options)

    def count_rows(self) -> dict[str, int]:
        """Row counts of the layer's tables that exist in this database."""
        present = {
            name
            for (name,) in self._fetch(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        return {
            name: self._fetch(f'SELECT COUNT(*) FROM "{name}"')[0][0]
            for name in (
                "workflow_executions",
                "task_executions",
                "audit_events",
                "instances",
                "dead_letters",
            )
            if name in present
        }

    def writer_lease(self) -> WriterLease | None:
        """The lease as plain values, `alive` judged by pid on this boot, else by the heartbeat's age."""
        lease = super().writer_lease()
        if lease is None or lease.released is not None or leases.of_this_boot(lease.boot_id):
            return lease
        if lease.boot_id is None and lease.host == leases.host_name():
            return lease  # no boot id, but this host: its pid was checked
        age = lease.heartbeat_age_s
        alive = age is not None and age <= REMOTE_WRITER_STALE_AFTER_S
        return lease if alive == lease.alive else dataclasses.replace(lease, alive=alive)
