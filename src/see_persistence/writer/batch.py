"""Applying one batch of raw messages inside one transaction.

Per instance, a message is applied only when its sequence number is the next one: a
duplicate (a resend of something committed) is skipped, a message after a gap is held
back (the client resends from the gap). A message or operation that is wrong goes to
`dead_letters` with its reason; everything else in the batch commits with it.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..protocol import binding, codec, operations, statements, timestamps
from ..protocol.errors import InvalidOperation, RejectedMessage
from .retention import apply_prune

log = logging.getLogger("see_persistence.writer")

# SQLite errors that belong to one statement's data (a constraint, a value too big), as
# opposed to the database as a whole (disk full, I/O error), which fails the batch.
_STATEMENT_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)
_STATEMENT_ERROR_NAMES = frozenset({"SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_CONSTRAINT"})


@dataclass
class BatchResult:
    """What one batch did, for counters and commit notices."""

    messages: int = 0
    operations_applied: int = 0
    duplicates: int = 0
    gaps: int = 0
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    committed_seq: dict[str, int] = field(default_factory=dict)  # instance -> last seq now committed
    rejected_total: dict[str, int] = field(default_factory=dict)  # instance -> operations refused, ever
    gap_instances: set[str] = field(default_factory=set)


class SequenceBook:
    """Per instance, the last committed sequence number and the running total of rejected
    operations, cached from `instances`."""

    def __init__(self) -> None:
        self._committed: dict[str, tuple[int, int]] = {}

    def _entry(self, conn: sqlite3.Connection, instance_id: str) -> tuple[int, int]:
        entry = self._committed.get(instance_id)
        if entry is None:
            row = conn.execute(
                "SELECT last_seq, rejected FROM instances WHERE id = ?", (instance_id,)
            ).fetchone()
            entry = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
            self._committed[instance_id] = entry
        return entry

    def last(self, conn: sqlite3.Connection, instance_id: str) -> int:
        """The last committed seq for `instance_id` (0 if it never committed anything)."""
        return self._entry(conn, instance_id)[0]

    def rejected(self, conn: sqlite3.Connection, instance_id: str) -> int:
        """How many operations of `instance_id` were rejected in committed batches."""
        return self._entry(conn, instance_id)[1]

    def commit(self, committed: dict[str, int], rejected: dict[str, int]) -> None:
        """Record what a batch committed (only after its COMMIT succeeded): seqs and totals."""
        for instance_id, seq in committed.items():
            self._committed[instance_id] = (seq, rejected[instance_id])

    def forget(self) -> None:
        """Drop the cache, e.g. after losing the lease: the file is the truth."""
        self._committed.clear()


def trim_dead_letters(conn: sqlite3.Connection, keep: int) -> int:
    """Drop the oldest dead letters beyond `keep`, count them in `counters`; return how many."""
    dropped = conn.execute(statements.TRIM_DEAD_LETTERS, (keep,)).rowcount
    if dropped > 0:
        conn.execute(statements.ADD_TO_COUNTER, (statements.DEAD_LETTERS_DROPPED_COUNTER, dropped))
        log.warning("dead-letter table full: dropped the %d oldest rows", dropped)
    return max(dropped, 0)


def _is_statement_error(exc: sqlite3.Error) -> bool:
    if isinstance(exc, _STATEMENT_ERRORS):
        return True
    name = getattr(exc, "sqlite_errorname", "")
    return any(name.startswith(prefix) for prefix in _STATEMENT_ERROR_NAMES)


class _Pending(NamedTuple):
    """One checked operation waiting to run, and where it came from (for a dead letter)."""

    params: tuple[Any, ...]
    name: str
    payload: Any
    instance_id: str
    seq: int


class _Applier:
    """Runs operations in order, each run of the same statement as one executemany."""

    def __init__(self, conn: sqlite3.Connection, result: BatchResult, now: str) -> None:
        self.conn = conn
        # One cursor for the batch: Connection.execute makes a new one for every statement.
        self.cursor = conn.cursor()
        self.result = result
        self.now = now
        self.run_statement: statements.Statement | None = None
        self.run: list[_Pending] = []
        self.rejected: dict[str, int] = {}  # instance -> operations refused in this batch

    def dead_letter(self, raw: bytes, reason: str, instance_id: str | None, seq: int | None) -> None:
        self.conn.execute(statements.INSERT_DEAD_LETTER, (self.now, instance_id, seq, reason, raw))
        self.result.dead_letters += 1
        log.debug("dead letter from %s seq %s: %s", instance_id, seq, reason)

    def reject(self, name: str, payload: Any, reason: str, instance_id: str, seq: int) -> None:
        """A dead letter for one operation of an in-order message, counted against its instance."""
        self.dead_letter(codec.encode_operation(name, payload), reason, instance_id, seq)
        self.rejected[instance_id] = self.rejected.get(instance_id, 0) + 1

    def add(self, statement: statements.Statement, op: _Pending) -> None:
        if statement is not self.run_statement:
            self.flush()
            self.run_statement = statement
        self.run.append(op)

    def flush(self) -> None:
        statement, run = self.run_statement, self.run
        self.run_statement, self.run = None, []
        if statement is None or not run:
            return
        if len(run) > 1:
            # All at once inside a savepoint; if any one fails, undo the run and go one by one
            # so that only the failing operations become dead letters.
            self.cursor.execute("SAVEPOINT run")
            try:
                changed = self.cursor.executemany(statement.sql, [op.params for op in run]).rowcount
                ok = not statement.must_change_a_row or changed == len(run)
            except sqlite3.Error as exc:
                if not _is_statement_error(exc):
                    raise
                ok = False
            if ok:
                self.cursor.execute("RELEASE run")
                self.result.operations_applied += len(run)
                return
            self.cursor.execute("ROLLBACK TO run")
            self.cursor.execute("RELEASE run")
        for op in run:
            self._one(statement, op)

    def prune(self, name: str, payload: Any, values: dict[str, Any], instance_id: str, seq: int) -> None:
        """Apply a prune after everything before it, in order."""
        self.flush()
        try:
            apply_prune(self.conn, values)
        except sqlite3.Error as exc:
            if not _is_statement_error(exc):
                raise
            self.reject(name, payload, f"{name}: {exc}", instance_id, seq)
            return
        self.result.operations_applied += 1

    def _one(self, statement: statements.Statement, op: _Pending) -> None:
        try:
            changed = self.cursor.execute(statement.sql, op.params).rowcount
        except sqlite3.Error as exc:
            if not _is_statement_error(exc):
                raise
            self.reject(op.name, op.payload, f"{op.name}: {exc}", op.instance_id, op.seq)
            return
        if changed == 0 and statement.must_change_a_row:
            target = op.payload.get("id", op.instance_id) if isinstance(op.payload, dict) else op.instance_id
            self.reject(
                op.name, op.payload, f"{op.name}: no record with id {target!r}", op.instance_id, op.seq
            )
            return
        self.result.operations_applied += 1


def apply_messages(
    conn: sqlite3.Connection,
    raws: list[bytes],
    book: SequenceBook,
    *,
    now_us: int,
    dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
) -> BatchResult:
    """Apply `raws` inside the caller's open transaction and return what happened.

    Raises sqlite3.Error for faults of the database as a whole; the caller rolls back and
    keeps the batch. `book` is not changed: the caller commits `result.committed_seq` and
    `result.rejected_total` to it after COMMIT.
    """
    now = timestamps.format_us(now_us)
    result = BatchResult()
    applier = _Applier(conn, result, now)
    pending_seq: dict[str, int] = {}
    fast_binds = binding.FAST_BINDS
    for raw in raws:
        result.messages += 1
        try:
            envelope = codec.decode_message(raw)
        except RejectedMessage as rejected:
            applier.dead_letter(bytes(raw), rejected.reason, rejected.instance_id, rejected.seq)
            continue
        instance_id, seq = envelope.instance_id, envelope.seq
        last = pending_seq.get(instance_id)
        if last is None:
            last = book.last(conn, instance_id)
        if seq <= last:
            result.duplicates += 1
            continue
        if seq > last + 1:
            result.gaps += 1
            result.gap_instances.add(instance_id)
            continue
        for name, payload in envelope.operations:
            fast = fast_binds.get(name) if type(name) is str else None  # a list is no key
            bound = fast(payload, instance_id, now) if fast is not None else None
            if bound is not None:
                statement, params = bound
                applier.add(statement, _Pending(params, name, payload, instance_id, seq))
                continue
            try:
                values = operations.validate_operation(name, payload)
            except InvalidOperation as invalid:
                applier.reject(name, payload, invalid.reason, instance_id, seq)
                continue
            values["instance_id"] = instance_id
            values["now"] = now
            values["at"] = timestamps.format_us(values["at_us"])
            if name == operations.PRUNE:
                applier.prune(name, payload, values, instance_id, seq)
                continue
            statement = statements.statement_for(name, values)
            applier.add(statement, _Pending(statement.bind(values), name, payload, instance_id, seq))
        pending_seq[instance_id] = seq
    applier.flush()
    for instance_id, seq in pending_seq.items():
        rejected_total = book.rejected(conn, instance_id) + applier.rejected.get(instance_id, 0)
        result.rejected_total[instance_id] = rejected_total
        conn.execute(
            statements.RECORD_INSTANCE_SEQ,
            {"instance_id": instance_id, "seq": seq, "now": now, "rejected": rejected_total},
        )
    if result.dead_letters:
        result.dead_letters_dropped = trim_dead_letters(conn, dead_letters_kept)
    result.committed_seq = pending_seq
    return result
