"""The two ends of a migration: a source read in one snapshot, a destination written in chunks.

Source: an SQLite file read in one read transaction (one snapshot however long the copy
takes; the WAL cannot be checkpointed past it meanwhile, so it grows while a writer
commits), or a PostgreSQL database read in one REPEATABLE READ, READ ONLY transaction.
Rows come in key order: SQLite's binary order of text, PostgreSQL's under COLLATE "C",
which are both Unicode code point order, as Python compares str.

Destination: a new SQLite file built under a hidden name beside DEST and renamed to DEST
once verified, or a PostgreSQL database with none of the records yet, on which this
session holds the writer's advisory lock for the whole migration (no writer can start on
it meanwhile, and a running one refuses the migration). Each chunk of rows commits with
its record in the progress table, so an interrupted migration carries on from there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..backends import DatabaseURL
from ..protocol import schema, schema_postgresql, timestamps
from .base import EXIT_LEASE_HELD, CommandError
from .migrate_tables import MIGRATED_TABLES, TableSpec, declared_types

STATE_TABLE = "see_migration"
CHUNKS_TABLE = "see_migration_chunks"
FETCH_ROWS = 2000
Key = tuple[Any, ...]


def _quote(name: str) -> str:
    return f'"{name}"'


class Chunk:
    """A committed chunk: rows of `table` with keys in (the previous chunk's hi, hi]."""

    __slots__ = ("checksum", "count", "hi", "number")

    def __init__(self, number: int, hi: Key, count: int, checksum: int) -> None:
        self.number, self.hi, self.count, self.checksum = number, hi, count, checksum


# -- sources -----------------------------------------------------------------------------------------


class Source:
    """What a migration reads: one snapshot of the records."""

    description: str

    def columns(self, table: str) -> list[str] | None:
        """The table's columns in the snapshot, or None when the source has no such table."""
        raise NotImplementedError

    def count(self, table: str) -> int:
        """The table's rows in the snapshot."""
        raise NotImplementedError

    def rows(self, spec: TableSpec, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of the table in the snapshot, in key order (code point order of text)."""
        raise NotImplementedError

    def point(self) -> str:
        """Where the snapshot stands: the source writer's commit number, if it keeps one."""
        raise NotImplementedError

    def close(self) -> None:
        """End the snapshot."""
        raise NotImplementedError


def _point_from(row: Sequence[Any] | None) -> str:
    if row is None:
        return "no writer has committed to it"
    commit_seq, epoch, released = row
    state = "released" if released is not None else "held"
    if commit_seq is None:
        return f"writer epoch {epoch} ({state}), no commit number recorded"
    return f"commit {commit_seq} of writer epoch {epoch} ({state})"


class SqliteSource(Source):
    """An SQLite file, read in one read transaction."""

    def __init__(self, path: Path) -> None:
        from ..database import open_read_only

        self.path = path
        self.description = str(path)
        self.conn = open_read_only(path)
        self._closed = False
        self.conn.execute("BEGIN")
        self._tables = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    def columns(self, table: str) -> list[str] | None:
        if table not in self._tables:
            return None
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({_quote(table)})")]

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {_quote(table)}").fetchone()[0])

    def rows(self, spec: TableSpec, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(map(_quote, columns))
        order = ", ".join(map(_quote, spec.key))
        cursor = self.conn.execute(f"SELECT {cols} FROM {_quote(spec.name)} ORDER BY {order}")
        while chunk := cursor.fetchmany(FETCH_ROWS):
            yield from chunk

    def point(self) -> str:
        if "writer_lease" not in self._tables:
            return _point_from(None)
        names = {r[1] for r in self.conn.execute("PRAGMA table_info(writer_lease)")}
        seq = "commit_seq" if "commit_seq" in names else "NULL"
        row = self.conn.execute(f"SELECT {seq}, epoch, released_at FROM writer_lease WHERE id = 1").fetchone()
        return _point_from(row)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()


class PostgresSource(Source):
    """A PostgreSQL database, read in one REPEATABLE READ, READ ONLY transaction."""

    def __init__(self, database: DatabaseURL) -> None:
        import psycopg

        from .pg_session import connect

        self.description = str(database)
        self.conn = connect(database, read_only=True, purpose="migrate (source)")
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        # The snapshot is taken by the first statement and kept to the end of the transaction.
        self._tables = {
            r[0]
            for r in self.conn.execute(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        }
        self._cursors = 0

    def columns(self, table: str) -> list[str] | None:
        if table not in self._tables:
            return None
        rows = self.conn.execute(
            "SELECT column_name::text FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        # A PostgreSQL-only column (a writer's commit number) has no place in the other backend.
        return [r[0] for r in rows if (table, r[0]) not in schema_postgresql.POSTGRESQL_ONLY_COLUMNS]

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT COUNT(*) FROM {_quote(table)}").fetchone()
        return int(row[0]) if row else 0

    def rows(self, spec: TableSpec, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        types = declared_types()[spec.name]
        cols = ", ".join(map(_quote, columns))
        order = ", ".join(
            f'{_quote(k)} COLLATE "C"' if types.get(k, "TEXT") == "TEXT" else _quote(k) for k in spec.key
        )
        self._cursors += 1
        # A server-side cursor: one sort, rows streamed, memory bounded.
        with self.conn.cursor(name=f"see_migrate_{self._cursors}") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(f"SELECT {cols} FROM {_quote(spec.name)} ORDER BY {order}")
            yield from cursor

    def point(self) -> str:
        if "writer_lease" not in self._tables:
            return _point_from(None)
        row = self.conn.execute(
            "SELECT commit_seq, epoch, released_at FROM writer_lease WHERE id = 1"
        ).fetchone()
        return _point_from(row)

    def close(self) -> None:
        if self.conn.closed:
            return
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


# -- destinations ------------------------------------------------------------------------------------


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


class Destination:
    """What a migration writes: the schema, then chunks each committed with its progress record."""

    description: str
    placeholder = "?"

    # -- the progress record

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _table_names(self) -> set[str]:
        raise NotImplementedError

    def _key_compare(self, spec: TableSpec, op: str) -> str:
        raise NotImplementedError

    def _adapt(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        return rows

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert new rows (no conflict possible)."""
        raise NotImplementedError

    def prepare(self, source: str, snapshot: str) -> bool:
        """Create what the migration needs; True if it resumes an interrupted one of `source`."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the destination (an unfinished migration stays resumable)."""
        raise NotImplementedError

    def finish(self) -> str:
        """Drop the progress tables and make the destination an ordinary database; where it is."""
        raise NotImplementedError

    def _create_state(self, source: str, snapshot: str) -> None:
        p = self.placeholder
        self._execute(
            f"CREATE TABLE {STATE_TABLE} (source TEXT NOT NULL, started_at TEXT NOT NULL,"
            " runs INTEGER NOT NULL, snapshot TEXT)"
        )
        self._execute(
            f"CREATE TABLE {CHUNKS_TABLE} (table_name TEXT NOT NULL, number INTEGER NOT NULL,"
            " hi TEXT NOT NULL, row_count INTEGER NOT NULL, checksum TEXT NOT NULL,"
            " PRIMARY KEY (table_name, number))"
        )
        now = timestamps.format_us(time.time_ns() // 1000)
        self._execute(
            f"INSERT INTO {STATE_TABLE} (source, started_at, runs, snapshot) VALUES ({p}, {p}, 1, {p})",
            (source, now, snapshot),
        )

    def _resume_state(self, source: str, snapshot: str) -> None:
        rows = self._execute(f"SELECT source, started_at FROM {STATE_TABLE}")
        if not rows or rows[0][0] != source:
            other = rows[0][0] if rows else "an unknown source"
            raise CommandError(
                f"{self.description} holds an unfinished migration from {other}, not from {source};"
                " finish that one (run it again with that source), or start again into a new destination"
            )
        p = self.placeholder
        self._execute(f"UPDATE {STATE_TABLE} SET runs = runs + 1, snapshot = {p}", (snapshot,))

    def chunks(self, table: str) -> list[Chunk]:
        """The committed chunks of `table`, in key order."""
        p = self.placeholder
        rows = self._execute(
            f"SELECT number, hi, row_count, checksum FROM {CHUNKS_TABLE}"
            f" WHERE table_name = {p} ORDER BY number",
            (table,),
        )
        return [Chunk(int(n), tuple(json.loads(hi)), int(c), int(s, 16)) for n, hi, c, s in rows]

    def _record(self, table: str, chunk: Chunk) -> None:
        p = self.placeholder
        self._execute(
            f"DELETE FROM {CHUNKS_TABLE} WHERE table_name = {p} AND number = {p}", (table, chunk.number)
        )
        self._execute(
            f"INSERT INTO {CHUNKS_TABLE} (table_name, number, hi, row_count, checksum)"
            f" VALUES ({p}, {p}, {p}, {p}, {p})",
            (table, chunk.number, json.dumps(list(chunk.hi)), chunk.count, f"{chunk.checksum:016x}"),
        )

    def commit_chunk(
        self, spec: TableSpec, columns: Sequence[str], rows: list[tuple[Any, ...]], chunk: Chunk
    ) -> None:
        """Insert a new chunk's rows and its record, in one transaction."""
        self.insert(spec.name, columns, self._adapt(spec.name, columns, rows))
        self._record(spec.name, chunk)
        self._commit()

    def reconcile_chunk(
        self,
        spec: TableSpec,
        columns: Sequence[str],
        lo: Key | None,
        rows: list[tuple[Any, ...]],
        chunk: Chunk,
    ) -> None:
        """Make the rows with keys in (lo, chunk.hi] exactly `rows`, and record it, in one transaction.

        Rows the source no longer has are deleted (a workflow's tasks and a task's log lines
        with it: the source deleted them too, in the same snapshot); the others are upserted.
        """
        keys = list(spec.key)
        positions = [columns.index(k) for k in keys]
        wanted = {tuple(row[i] for i in positions) for row in rows}
        where = self._key_compare(spec, "<=")
        params: list[Any] = list(chunk.hi)
        if lo is not None:
            where = f"{self._key_compare(spec, '>')} AND {where}"
            params = [*lo, *params]
        key_cols = ", ".join(map(_quote, keys))
        present = {
            tuple(r)
            for r in self._execute(f"SELECT {key_cols} FROM {_quote(spec.name)} WHERE {where}", params)
        }
        stale = sorted(present - wanted)
        p = self.placeholder
        if stale:
            if spec.name == "workflow_executions":
                self._executemany(
                    "DELETE FROM task_log_lines WHERE task_id IN"
                    f" (SELECT id FROM task_executions WHERE workflow_id = {p})",
                    [(k[0],) for k in stale],
                )
                self._executemany(
                    f"DELETE FROM task_executions WHERE workflow_id = {p}", [(k[0],) for k in stale]
                )
            if spec.name == "task_executions":
                self._executemany(f"DELETE FROM task_log_lines WHERE task_id = {p}", [(k[0],) for k in stale])
            match = " AND ".join(f"{_quote(k)} = {p}" for k in keys)
            self._executemany(f"DELETE FROM {_quote(spec.name)} WHERE {match}", stale)
        if rows:
            cols = ", ".join(map(_quote, columns))
            marks = ", ".join([p] * len(columns))
            updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns if c not in keys)
            self._executemany(
                f"INSERT INTO {_quote(spec.name)} ({cols}) VALUES ({marks})"
                f" ON CONFLICT ({key_cols}) DO UPDATE SET {updates}",
                self._adapt(spec.name, columns, rows),
            )
        self._record(spec.name, chunk)
        self._commit()

    def columns(self, table: str) -> list[str]:
        """The destination table's columns."""
        raise NotImplementedError

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of the table as written, for the verification (any order)."""
        raise NotImplementedError

    def holds_records(self) -> list[str]:
        """The migrated tables that hold rows, and tables not ours: what makes DEST someone else's."""
        names = self._table_names()
        found = [spec.name for spec in MIGRATED_TABLES if spec.name in names and self._any_row(spec.name)]
        foreign = [n for n in schema.foreign_tables(names) if n not in (STATE_TABLE, CHUNKS_TABLE)]
        return found + foreign

    def _any_row(self, table: str) -> bool:
        return bool(self._execute(f"SELECT 1 FROM {_quote(table)} LIMIT 1"))


class SqliteDestination(Destination):
    """A new SQLite file, built under `.<name>.migrating` beside DEST and renamed when verified."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.partial = dest.with_name(f".{dest.name}.migrating")
        self.description = str(dest)
        self.conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        assert self.conn is not None, "prepare() opens the connection"
        return self.conn

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        return conn.execute(sql, params).fetchall()

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self._connection()
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)

    def _commit(self) -> None:
        conn = self._connection()
        if conn.in_transaction:
            conn.execute("COMMIT")

    def _table_names(self) -> set[str]:
        return {
            r[0] for r in self._connection().execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    def _key_compare(self, spec: TableSpec, op: str) -> str:
        keys = ", ".join(map(_quote, spec.key))
        marks = ", ".join("?" * len(spec.key))
        return f"({keys}) {op} ({marks})"

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(map(_quote, columns))
        marks = ", ".join("?" * len(columns))
        self._executemany(f"INSERT INTO {_quote(table)} ({cols}) VALUES ({marks})", rows)

    def prepare(self, source: str, snapshot: str) -> bool:
        from ..writer.storage import open_write_connection, upgrade_schema

        if self.dest.exists() or self.dest.is_symlink():
            raise CommandError(
                f"{self.dest} exists; migrate writes a new file (remove it, or name another DEST)"
            )
        if not self.dest.parent.is_dir():
            raise CommandError(f"directory {self.dest.parent} does not exist")
        resuming = self.partial.exists()
        self.conn = open_write_connection(self.partial)  # owner-only, WAL
        # Rows arrive table by table and chunks are reconciled out of order: the snapshot they
        # come from is consistent, and verify() runs PRAGMA foreign_key_check at the end.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        if resuming:
            names = self._table_names()
            if STATE_TABLE not in names:
                self.conn.close()
                self.conn = None
                raise CommandError(
                    f"{self.partial} exists but is no migration of this command's; remove it and run again"
                )
            self._resume_state(source, snapshot)
        else:
            upgrade_schema(self.conn, time.time_ns() // 1000)
            self._create_state(source, snapshot)
        self._commit()
        return resuming

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self._connection().execute(f"PRAGMA table_info({_quote(table)})")]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(map(_quote, columns))
        cursor = self._connection().execute(f"SELECT {cols} FROM {_quote(table)}")
        while chunk := cursor.fetchmany(FETCH_ROWS):
            yield from chunk

    def orphans(self) -> int:
        """Rows whose parent row is missing (PRAGMA foreign_key_check)."""
        return len(self._connection().execute("PRAGMA foreign_key_check").fetchall())

    def finish(self) -> str:
        from .copying import fsync_path

        conn = self._connection()
        self._execute(f"DROP TABLE {CHUNKS_TABLE}")
        self._execute(f"DROP TABLE {STATE_TABLE}")
        self._commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        self.conn = None
        try:
            os.link(self.partial, self.dest)  # never over a DEST that appeared meanwhile
        except FileExistsError:
            raise CommandError(
                f"{self.dest} appeared during the migration; the copy stays at {self.partial}"
            ) from None
        os.unlink(self.partial)
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(self.partial.with_name(self.partial.name + suffix))
            except FileNotFoundError:
                pass
        fsync_path(self.dest.parent)
        return str(self.dest)

    def close(self) -> None:
        if self.conn is not None:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


class PostgresDestination(Destination):
    """A PostgreSQL database without records, the writer's advisory lock held while copying."""

    placeholder = "%s"

    def __init__(self, database: DatabaseURL) -> None:
        self.database = database
        self.description = str(database)
        self.conn: Any = None
        self.booleans: dict[str, list[int]] = {}

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _commit(self) -> None:
        self.conn.commit()

    def _table_names(self) -> set[str]:
        sql = "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
        return {r[0] for r in self._execute(sql)}

    def _key_compare(self, spec: TableSpec, op: str) -> str:
        types = declared_types()[spec.name]
        keys = ", ".join(
            f'{_quote(k)} COLLATE "C"' if types.get(k, "TEXT") == "TEXT" else _quote(k) for k in spec.key
        )
        marks = ", ".join(["%s"] * len(spec.key))
        return f"ROW({keys}) {op} ROW({marks})"

    def _adapt(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        positions = [i for i, c in enumerate(columns) if declared_types()[table].get(c) == "BOOLEAN"]
        texts = [i for i, c in enumerate(columns) if declared_types()[table].get(c, "TEXT") == "TEXT"]
        adapted = []
        for row in rows:
            for i in texts:
                if _has_nul(row[i]) or (isinstance(row[i], str) and "\\u0000" in row[i]):
                    raise CommandError(
                        f"{table} row {row[0]!r}: its {columns[i]} holds the character U+0000, which"
                        " PostgreSQL cannot store; correct it in the source and run migrate again"
                    )
            if positions:
                values = list(row)
                for i in positions:
                    if values[i] is not None:
                        values[i] = bool(values[i])
                row = tuple(values)
            adapted.append(row)
        return adapted

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(map(_quote, columns))
        with self.conn.cursor() as cursor, cursor.copy(f"COPY {_quote(table)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def prepare(self, source: str, snapshot: str) -> bool:
        from ..writer.pg_storage import WRITER_LOCK_KEY, upgrade_schema
        from .pg_session import connect

        self.conn = connect(self.database, read_only=False, purpose="migrate (destination)")
        self.conn.autocommit = True
        held = self._execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,))
        if not held or not held[0][0]:
            raise CommandError(
                f"a writer holds the lease on {self.database}: it is in use; migrate writes only into a"
                " database no writer serves (stop it first)",
                EXIT_LEASE_HELD,
            )
        names = self._table_names()
        resuming = STATE_TABLE in names
        if not resuming:
            # Looked at before anything is created: a database of someone else's stays untouched.
            other = self.holds_records()
            if other:
                raise CommandError(
                    f"{self.database} already holds data ({', '.join(other)}); migrate writes only into a"
                    " database without records (create a new one: createdb NAME)"
                )
        upgrade_schema(self.conn, time.time_ns() // 1000)
        self.conn.autocommit = False
        if resuming:
            self._resume_state(source, snapshot)
        else:
            self._create_state(source, snapshot)
        self._commit()
        return resuming

    def columns(self, table: str) -> list[str]:
        rows = self._execute(
            "SELECT column_name::text FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in rows]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(map(_quote, columns))
        with self.conn.cursor(name=f"see_verify_{table}") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(f"SELECT {cols} FROM {_quote(table)}")
            yield from cursor
        self._commit()

    def finish(self) -> str:
        # The identity of dead_letters numbers on past the copied ids, else the writer's next
        # dead letter would collide with one copied.
        self._execute(
            "SELECT setval(pg_get_serial_sequence('dead_letters', 'id'), COALESCE(MAX(id), 1),"
            " MAX(id) IS NOT NULL) FROM dead_letters"
        )
        self._execute(f"DROP TABLE {CHUNKS_TABLE}, {STATE_TABLE}")
        self._commit()
        return str(self.database)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # an open transaction rolls back; the advisory lock goes with the session
            self.conn = None
