"""Applying a prepared batch on PostgreSQL, inside the caller's transaction.

Decoding, the sequence and owner checks and binding are writer/batch.py's `prepare_messages`,
the same for both backends; this runs the `PreparedBatch` it makes, with the statements of
protocol/statements_postgresql.py:

- first at once: each run of one statement is one `executemany`, which psycopg sends in
  pipeline mode (every row, then one sync: one round trip), or, for a long run of a plain
  INSERT, one COPY; no savepoints. PostgreSQL aborts the whole transaction at an error (SQLite
  undoes only the statement), so if anything fails the transaction is rolled back and the
  batch applied again carefully: each run in a savepoint, and where one fails, one row at a
  time, each in its own savepoint, so that only the failing operations become dead letters.
  Failures are rare and a savepoint costs two round trips, so the usual batch pays none.
- an operation with U+0000 in any text, or a \\u0000 escape in its JSON, becomes a dead letter
  before it is sent: neither text nor jsonb can hold it.
- a task's appends go in with one UPDATE per batch, placed by protocol/task_logs.py as on SQLite.
- dead letters are inserted at the end in one executemany; the per-instance sequence and
  rejected totals are recorded, and the dead-letter table trimmed, as on SQLite.
- a prune operation records its job, as on SQLite (writer/retention.py); the writer deletes
  in chunks between batches (writer/pg_retention.py has the statements).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..protocol import statements, task_logs
from ..protocol import statements_postgresql as pgsql
from .batch import (
    LOG_LINE,
    LOG_TASK_ID,
    BatchResult,
    DeadLetter,
    Logs,
    Pending,
    PreparedBatch,
    Prune,
    Queryable,
    Run,
    SequenceBook,
    StepApplier,
)
from .pg_retention import POSTGRESQL_PRUNE
from .retention import record_prune

log = logging.getLogger("see_persistence.writer")

NUL_REASON = "PostgreSQL cannot store the character U+0000 (NUL) in text or JSON"
_NUL_ESCAPE = "\\u0000"
# From this many rows a run of a plain INSERT goes by COPY rather than executemany (measured
# with tools/bench_pg_inserts.py; see docs/POSTGRESQL.md).
COPY_MIN_ROWS = 4


class PostgresSequenceBook(SequenceBook):
    """The sequence book, looking instances up with psycopg's placeholder."""

    credentials_sql = pgsql.INSTANCE_CREDENTIALS

    def _credentials(self, conn: Queryable, instance_id: str) -> Any:
        if "\x00" in instance_id:
            return None  # no row can have such an id; the lookup itself would fail
        return super()._credentials(conn, instance_id)


def is_statement_error(exc: BaseException) -> bool:
    """True if `exc` belongs to one statement's data (its operation becomes a dead letter).

    A constraint, a value the column's type refuses, or a value psycopg cannot send. Not the
    connection, the server's resources, or a transaction already aborted: those fail the batch,
    which is kept and tried again.
    """
    if isinstance(exc, (pg_errors.IntegrityError, pg_errors.DataError)):
        return True
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, psycopg.InternalError)):
        return False
    return isinstance(exc, psycopg.Error) and not isinstance(exc, pg_errors.InFailedSqlTransaction)


def _json_holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_json_holds_nul(k) or _json_holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_json_holds_nul(v) for v in value)
    return False


def holds_nul(params: tuple[Any, ...], json_positions: tuple[int, ...]) -> bool:
    """True if a text parameter has U+0000, or a JSON one a string with it (PostgreSQL stores neither)."""
    for value in params:
        if type(value) is str and "\x00" in value:
            return True
    for position in json_positions:
        text = params[position]
        if type(text) is str and _NUL_ESCAPE in text:
            # Rare: decode to tell a real \u0000 from an escaped backslash before "u0000".
            try:
                if _json_holds_nul(json.loads(text)):
                    return True
            except ValueError:
                return False  # not JSON: the server says why
    return False


def _first_line(exc: BaseException) -> str:
    """The first line of a server error (psycopg adds lines of detail and hints): a dead letter's reason."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _printable(text: str | None) -> str | None:
    """`text` storable in a text column: U+0000 spelled out (dead letters keep what they can)."""
    return None if text is None else text.replace("\x00", _NUL_ESCAPE)


class PostgresApplier(StepApplier):
    """Runs a prepared batch's steps on one psycopg connection, inside its open transaction."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        result: BatchResult,
        now: str,
        log_column_max_bytes: int,
        *,
        careful: bool,
    ):
        super().__init__(result, now)
        self.conn = conn
        self.careful = careful
        self.cursor = conn.cursor()
        self.log_column_max_bytes = log_column_max_bytes
        self.letters: list[tuple[Any, ...]] = []

    def dead_letter(self, letter: DeadLetter) -> None:
        """Queue a dead letter (they are inserted together at the end of the batch)."""
        self.letters.append(
            (self.now, _printable(letter.instance_id), letter.seq, _printable(letter.reason), letter.raw)
        )
        self.count(letter)

    def run(self, step: Run) -> None:
        """One run of one statement: at once (COPY or executemany); carefully, in savepoints."""
        statement = pgsql.for_statement(step.statement)
        storable: list[Pending] = []
        for op in step.operations:
            if holds_nul(op.params, statement.json_positions):
                self.reject(op.name, op.payload, f"{op.name}: {NUL_REASON}", op.instance_id, op.seq)
            else:
                storable.append(op)
        if not storable:
            return
        if not self.careful:
            self._at_once(step.statement.sql, statement, storable)
            return
        if len(storable) > 1:
            try:
                with self.conn.transaction():
                    self.cursor.executemany(statement.sql, [statement.params(op.params) for op in storable])
                    changed = self.cursor.rowcount
                    if statement.must_change_a_row and changed != len(storable):
                        raise NeedsCare
                self.result.operations_applied += len(storable)
                return
            except NeedsCare:
                pass
            except psycopg.Error as exc:
                if not is_statement_error(exc):
                    raise
        for op in storable:
            self._one(statement, op)

    def _at_once(self, sqlite_sql: str, statement: pgsql.PostgresStatement, ops: list[Pending]) -> None:
        """Send the run without a savepoint; raise NeedsCare if any of it fails or misses its row."""
        copy_form = pgsql.COPY_FORMS.get(sqlite_sql) if len(ops) >= COPY_MIN_ROWS else None
        try:
            if copy_form is not None:
                with self.cursor.copy(copy_form.sql) as copy:
                    for op in ops:
                        copy.write_row(copy_form.row(op.params))
            elif len(ops) == 1:
                self.cursor.execute(statement.sql, statement.params(ops[0].params))
            else:
                self.cursor.executemany(statement.sql, [statement.params(op.params) for op in ops])
        except psycopg.Error as exc:
            if is_statement_error(exc):
                raise NeedsCare from exc
            raise
        if statement.must_change_a_row and self.cursor.rowcount != len(ops):
            raise NeedsCare
        self.result.operations_applied += len(ops)

    def _one(self, statement: pgsql.PostgresStatement, op: Pending) -> None:
        try:
            with self.conn.transaction():
                changed = self.cursor.execute(statement.sql, statement.params(op.params)).rowcount
        except psycopg.Error as exc:
            if not is_statement_error(exc):
                raise
            first = _first_line(exc)
            self.reject(op.name, op.payload, f"{op.name}: {first}", op.instance_id, op.seq)
            return
        if changed == 0 and statement.must_change_a_row:
            self.reject_missing(op)
            return
        self.result.operations_applied += 1

    def logs(self, step: Logs) -> None:
        """Appends: each task's lines in one UPDATE (or past the column, in task_log_lines), in order."""
        lines: dict[str, list[str]] = {}
        ops: list[Pending] = []
        for op in step.operations:
            task_id, line = op.params[LOG_TASK_ID], op.params[LOG_LINE]
            if (
                not isinstance(task_id, str)
                or "\x00" in task_id
                or (isinstance(line, str) and "\x00" in line)
            ):
                self.reject(op.name, op.payload, f"{op.name}: {NUL_REASON}", op.instance_id, op.seq)
                continue
            lines.setdefault(task_id, []).append(line)
            ops.append(op)
        failed: dict[str, str] = {}
        if not self.careful:
            for task_id, task_lines in lines.items():
                try:
                    found = self._append(task_id, task_lines)
                except psycopg.Error as exc:
                    if is_statement_error(exc):
                        raise NeedsCare from exc
                    raise
                if not found:
                    raise NeedsCare
            self.result.operations_applied += len(ops)
            return
        for task_id, task_lines in lines.items():
            try:
                with self.conn.transaction():
                    if not self._append(task_id, task_lines):
                        failed[task_id] = f"no record with id {task_id!r}"
            except psycopg.Error as exc:
                if not is_statement_error(exc):
                    raise
                failed[task_id] = _first_line(exc)
        for op in ops:
            reason = failed.get(op.params[LOG_TASK_ID]) if failed else None
            if reason is None:
                self.result.operations_applied += 1
            else:
                self.reject(op.name, op.payload, f"{op.name}: {reason}", op.instance_id, op.seq)

    def _append(self, task_id: str, lines: list[str]) -> bool:
        """Append `lines` to task `task_id` as protocol/task_logs.py places them; False if no such task."""
        row = self.cursor.execute(pgsql.SELECT_LOGS + " FOR UPDATE", (task_id,)).fetchone()
        if row is None:
            return False
        text: str | None = row[0]
        last: int | None = None
        if text is not None and task_logs.LOG_CONTINUED_JSON in text:
            found = self.cursor.execute(pgsql.LAST_LINE_NO, (task_id,)).fetchone()
            last = found[0] if found else None
            if last is not None:
                self._insert_lines(task_id, last + 1, lines)
                self.cursor.execute(pgsql.TOUCH_TASK, (self.now, task_id))
                return True
        plan = task_logs.plan_append(text, lines, self.log_column_max_bytes)
        self.cursor.execute(pgsql.SET_LOGS, (plan.text, self.now, task_id))
        if plan.spilled:
            found = self.cursor.execute(pgsql.LAST_LINE_NO, (task_id,)).fetchone()
            last = found[0] if found else None
            first = plan.first_line_no if last is None else max(plan.first_line_no, last + 1)
            self._insert_lines(task_id, first, plan.spilled)
        return True

    def _insert_lines(self, task_id: str, first: int, lines: Sequence[str]) -> None:
        self.cursor.executemany(
            pgsql.INSERT_LINE, [(task_id, first + offset, line) for offset, line in enumerate(lines)]
        )

    def prune(self, step: Prune) -> None:
        """Record a prune job after everything before it, in order (the writer deletes in chunks later)."""
        try:
            if not self.careful:
                record_prune(self.conn, step.values, POSTGRESQL_PRUNE)
            else:
                with self.conn.transaction():
                    record_prune(self.conn, step.values, POSTGRESQL_PRUNE)
        except psycopg.Error as exc:
            if not is_statement_error(exc):
                raise
            if not self.careful:
                raise NeedsCare from exc
            first = _first_line(exc)
            self.reject(step.name, step.payload, f"{step.name}: {first}", step.instance_id, step.seq)
            return
        self.result.operations_applied += 1


class NeedsCare(Exception):
    """Applying at once failed (an operation the database refused, or one that found no row):
    roll the transaction back and apply the batch again carefully (`careful=True`)."""


def apply_prepared(
    conn: psycopg.Connection[Any],
    prepared: PreparedBatch,
    book: SequenceBook,
    *,
    dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
    dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
    log_column_max_bytes: int = task_logs.LOG_COLUMN_MAX_BYTES,
    careful: bool = False,
) -> BatchResult:
    """Inside the caller's open transaction on `conn`: do what was prepared; return what happened.

    Not `careful`, every run goes at once, with no savepoint: one round trip each (see the
    module docstring), and NeedsCare as soon as any operation fails; the caller then rolls
    back and calls again with `careful`, which isolates each failing operation as a dead
    letter. Raises psycopg.Error for faults of the database as a whole; the caller rolls back
    and may call again. `book` is only read; the caller commits the result to it after COMMIT.
    """
    result = replace(prepared.result, registered=dict(prepared.result.registered), rejected_total={})
    applier = PostgresApplier(conn, result, prepared.now, log_column_max_bytes, careful=careful)
    applier.apply_steps(prepared.steps)
    cursor = applier.cursor
    if applier.letters:
        cursor.executemany(pgsql.INSERT_DEAD_LETTER, applier.letters)
    seq_rows, heard_rows = prepared.instance_rows(result, applier.rejected)
    # An id holding U+0000 has no row (it could not be stored), so nothing to record of it.
    seq_rows = [row for row in seq_rows if "\x00" not in row["instance_id"]]
    heard_rows = [row for row in heard_rows if "\x00" not in row["instance_id"]]
    if seq_rows:
        cursor.executemany(pgsql.RECORD_INSTANCE_SEQ, seq_rows)
    if heard_rows:
        cursor.executemany(pgsql.RECORD_INSTANCE_HEARD, heard_rows)
    prepared.settle(
        result,
        book,
        applier.raw_bytes,
        read_total=lambda: int(_scalar(cursor, pgsql.DEAD_LETTER_BYTES)),
        trim_rows=lambda: _trim_rows(cursor, dead_letters_kept),
        trim_bytes=lambda total: _trim_bytes(cursor, total, dead_letter_bytes_kept),
    )
    return result


def _scalar(cursor: psycopg.Cursor[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = cursor.execute(sql, params).fetchone()
    return row[0] if row else None


def _add_dropped(cursor: psycopg.Cursor[Any], dropped: int) -> None:
    cursor.execute(pgsql.ADD_TO_COUNTER, (statements.DEAD_LETTERS_DROPPED_COUNTER, dropped))


def _trim_rows(cursor: psycopg.Cursor[Any], keep: int) -> tuple[int, int]:
    """Drop the oldest dead letters beyond `keep`; (rows dropped, their raw bytes)."""
    freed = int(_scalar(cursor, pgsql.DEAD_LETTER_BYTES_TO_TRIM, (keep,)))
    dropped = max(cursor.execute(pgsql.TRIM_DEAD_LETTERS, (keep,)).rowcount, 0)
    if dropped:
        _add_dropped(cursor, dropped)
        log.warning("dead-letter table full: dropped the %d oldest rows", dropped)
    return dropped, freed


def _trim_bytes(cursor: psycopg.Cursor[Any], total: int, keep_bytes: int) -> tuple[int, int]:
    """Drop the oldest dead letters until their raw bytes are within `keep_bytes`."""
    excess = total - keep_bytes
    if excess <= 0:
        return 0, 0
    row = cursor.execute(pgsql.OLDEST_DEAD_LETTERS_UP_TO_BYTES, (excess,)).fetchone()
    if row is None:  # the excess is more than the table holds (the total was stale): all of it
        row = cursor.execute(pgsql.ALL_DEAD_LETTERS_AND_BYTES).fetchone()
    if row is None or row[0] is None:
        return 0, 0
    last_id, freed = int(row[0]), int(row[1])
    dropped = max(cursor.execute(pgsql.TRIM_DEAD_LETTERS_UP_TO, (last_id,)).rowcount, 0)
    if dropped:
        _add_dropped(cursor, dropped)
        log.warning("dead letters past %d bytes of raw: dropped the %d oldest rows", keep_bytes, dropped)
    return dropped, freed
