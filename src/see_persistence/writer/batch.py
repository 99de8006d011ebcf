"""Applying one batch of raw messages inside one transaction.

An instance belongs to the sender of its first hello. A message of an instance the file has
no row of is applied only if it registers it (seq 1, a hello first); otherwise it is held
back, as after a gap, and the instance is told it is unknown. A message of a registered
instance whose token is not the one it registered with (codec's version 2 envelope; none for
an instance registered without one) is another sender's: a dead letter that does not advance
the instance's sequence, count against it, or touch it.

Per instance, a message is applied only when its sequence number is the next one: a
duplicate (a resend of something committed) is skipped, a message after a gap is held
back (the client resends from the gap). A message or operation that is wrong goes to
`dead_letters` with its reason (at most DEAD_LETTER_RAW_KEPT_BYTES of what was received);
everything else in the batch commits with it. The table is kept within a number of rows and
of raw bytes; the oldest rows go first.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from ..database import is_environmental
from ..protocol import binding, codec, operations, statements, task_logs, timestamps
from ..protocol.errors import InvalidOperation, RejectedMessage
from .retention import record_prune
from .task_logs import append_lines

log = logging.getLogger("see_persistence.writer")

# SQLite errors that belong to one statement's data (a constraint, a value too big), as
# opposed to the database as a whole (disk full, I/O error), which fails the batch.
_STATEMENT_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)
_STATEMENT_ERROR_NAMES = frozenset({"SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_CONSTRAINT"})
_UNVERIFIED = ""  # no token is this short: an instance with a token_hash starts unverified
# An append_task_log, by whichever path it was bound: where its task id and line are.
_APPEND_LOG = statements.COMPILED[(operations.APPEND_TASK_LOG, None)]
LOG_TASK_ID = _APPEND_LOG.names.index("id")
LOG_LINE = _APPEND_LOG.names.index("line")
_CREATE_TASK = statements.COMPILED[(operations.CREATE_TASK, None)]
_CREATED_TASK_ID = _CREATE_TASK.names.index("id")


class InstanceEntry:
    """What the writer knows of one registered instance: committed seq, rejected total, owner.

    `token` caches the last token found to match `token_hash`, so that the usual message costs
    a string comparison rather than a hash; None for an instance registered without a token.
    """

    __slots__ = ("last_seq", "rejected", "token", "token_hash")

    def __init__(self, last_seq: int, rejected: int, token_hash: str | None, token: str | None) -> None:
        self.last_seq = last_seq
        self.rejected = rejected
        self.token_hash = token_hash
        self.token = token

    def owned_by(self, token: str | None) -> bool:
        """True if a message carrying `token` (None: a version 1 message) is this instance's."""
        if token == self.token:
            return True
        if token is None or self.token_hash is None:
            return False
        if hmac.compare_digest(codec.token_digest(token), self.token_hash):
            self.token = token
            return True
        return False


def _entry_for(token_hash: str | None, last_seq: int = 0, rejected: int = 0) -> InstanceEntry:
    return InstanceEntry(last_seq, rejected, token_hash, None if token_hash is None else _UNVERIFIED)


@dataclass
class BatchResult:
    """What one batch did, for counters and commit notices."""

    messages: int = 0
    operations_applied: int = 0
    duplicates: int = 0
    gaps: int = 0
    unknown: int = 0  # messages of instances with no row that did not register one: held back
    not_owner: int = 0  # messages refused: their instance belongs to another sender
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    committed_seq: dict[str, int] = field(default_factory=dict)  # instance -> last seq now committed
    rejected_total: dict[str, int] = field(default_factory=dict)  # instance -> operations refused, ever
    gap_instances: set[str] = field(default_factory=set)
    unknown_instances: set[str] = field(default_factory=set)
    registered: dict[str, InstanceEntry] = field(default_factory=dict)  # by this batch's hellos
    # Instances that sent something of their own (a message, even a duplicate, or a heartbeat),
    # and of those that sent heartbeats, the sender's clock in the latest one.
    heard: set[str] = field(default_factory=set)
    heartbeats: dict[str, int] = field(default_factory=dict)
    heartbeats_unknown: int = 0  # heartbeats of instances the file has no row of: ignored
    dead_letter_bytes: int | None = None  # raw bytes of all dead letters after it (None: not looked)


class Queryable(Protocol):
    """A connection the book can look instances up on: sqlite3's, or psycopg's (see PostgreSQL)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement; the result has fetchone()."""


class SequenceBook:
    """What the writer knows of the file, cached: per registered instance its last committed
    sequence number, running total of rejected operations and owner's token hash; and the raw
    bytes of all dead letters. Instances the file does not know are not remembered.

    Decoding and checking a batch (prepare_messages) is the same on every backend; only the
    lookup's SQL differs (`credentials_sql`, with the backend's placeholder).
    """

    credentials_sql = statements.INSTANCE_CREDENTIALS

    def __init__(self) -> None:
        self._entries: dict[str, InstanceEntry] = {}
        self._dead_letter_bytes: int | None = None

    def entry(self, conn: Queryable, instance_id: str) -> InstanceEntry | None:
        """The registered instance `instance_id` as committed, or None if the file has no row of it."""
        entry = self._entries.get(instance_id)
        if entry is None:
            row = self._credentials(conn, instance_id)
            if row is None:
                return None  # not cached: a flood of made-up ids must not grow the book
            entry = _entry_for(row[2], int(row[0]), int(row[1] or 0))
            self._entries[instance_id] = entry
        return entry

    def _credentials(self, conn: Queryable, instance_id: str) -> Any:
        return conn.execute(self.credentials_sql, (instance_id,)).fetchone()

    def last(self, conn: Queryable, instance_id: str) -> int:
        """The last committed seq for `instance_id` (0 if it never committed anything)."""
        entry = self.entry(conn, instance_id)
        return entry.last_seq if entry is not None else 0

    def rejected(self, conn: Queryable, instance_id: str) -> int:
        """How many operations of `instance_id` were rejected in committed batches."""
        entry = self.entry(conn, instance_id)
        return entry.rejected if entry is not None else 0

    def dead_letter_bytes(self) -> int | None:
        """The raw bytes of every dead letter as committed, if known (None: read the file)."""
        return self._dead_letter_bytes

    def commit(
        self,
        committed: dict[str, int],
        rejected: dict[str, int],
        *,
        registered: Mapping[str, InstanceEntry] | None = None,
        dead_letter_bytes: int | None = None,
    ) -> None:
        """Record what a batch committed (only after its COMMIT succeeded): seqs and totals, the
        instances its hellos registered and the dead letters' raw bytes. What it is not told it
        reads from the file again when next needed."""
        for instance_id, seq in committed.items():
            entry = self._entries.get(instance_id)
            if entry is None and registered is not None:
                entry = registered.get(instance_id)
            if entry is None:
                continue
            entry.last_seq = seq
            entry.rejected = rejected[instance_id]
            self._entries[instance_id] = entry
        self._dead_letter_bytes = dead_letter_bytes

    def discard(self, instance_ids: Iterable[str]) -> None:
        """Forget instances whose rows were deleted."""
        for instance_id in instance_ids:
            self._entries.pop(instance_id, None)

    def forget(self) -> None:
        """Drop the cache, e.g. after losing the lease: the file is the truth."""
        self._entries.clear()
        self._dead_letter_bytes = None


def _add_dropped(conn: sqlite3.Connection, dropped: int) -> None:
    conn.execute(statements.ADD_TO_COUNTER, (statements.DEAD_LETTERS_DROPPED_COUNTER, dropped))


def trim_dead_letters(conn: sqlite3.Connection, keep: int) -> int:
    """Drop the oldest dead letters beyond `keep`, count them in `counters`; return how many."""
    return trim_dead_letters_measured(conn, keep)[0]


def trim_dead_letters_measured(conn: sqlite3.Connection, keep: int) -> tuple[int, int]:
    """Like trim_dead_letters; returns (rows dropped, their raw bytes)."""
    freed = int(conn.execute(statements.DEAD_LETTER_BYTES_TO_TRIM, (keep,)).fetchone()[0])
    dropped = conn.execute(statements.TRIM_DEAD_LETTERS, (keep,)).rowcount
    if dropped > 0:
        _add_dropped(conn, dropped)
        log.warning("dead-letter table full: dropped the %d oldest rows", dropped)
    return max(dropped, 0), freed


def trim_dead_letter_bytes(conn: sqlite3.Connection, total: int, keep_bytes: int) -> tuple[int, int]:
    """Drop the oldest dead letters until their raw bytes are within `keep_bytes`; count them.

    `total` is the table's raw bytes now. Returns (rows dropped, their raw bytes).
    """
    excess = total - keep_bytes
    if excess <= 0:
        return 0, 0
    freed = 0
    last_id: int | None = None
    cursor = conn.execute(statements.OLDEST_DEAD_LETTER_SIZES)
    try:
        for row_id, size in cursor:
            freed += int(size)
            last_id = int(row_id)
            if freed >= excess:
                break
    finally:
        cursor.close()
    if last_id is None:
        return 0, 0
    dropped = max(conn.execute(statements.TRIM_DEAD_LETTERS_UP_TO, (last_id,)).rowcount, 0)
    if dropped:
        _add_dropped(conn, dropped)
        log.warning(
            "dead letters past %d bytes of raw: dropped the %d oldest rows (%d bytes)",
            keep_bytes,
            dropped,
            freed,
        )
    return dropped, freed


def _is_statement_error(exc: sqlite3.Error) -> bool:
    """True if `exc` belongs to the one statement's data (its operation becomes a dead letter).

    Whatever is not a fault of the database or the machine is: a constraint, a value too big,
    and also what another program's schema makes of a value (a trigger of its own that fails,
    a `logs` value it left that is not JSON): one operation must not hold a batch back forever.
    """
    if isinstance(exc, _STATEMENT_ERRORS):
        return True
    name = getattr(exc, "sqlite_errorname", "")
    return any(name.startswith(prefix) for prefix in _STATEMENT_ERROR_NAMES) or not is_environmental(exc)


class Pending(NamedTuple):
    """One checked operation waiting to run, and where it came from (for a dead letter)."""

    params: tuple[Any, ...]
    name: str
    payload: Any
    instance_id: str
    seq: int


class Run(NamedTuple):
    """Consecutive operations of one statement: one executemany."""

    statement: statements.Statement
    operations: list[Pending]


class DeadLetter(NamedTuple):
    """A dead letter found while preparing: `rejected` counts it against its instance."""

    raw: bytes
    reason: str
    instance_id: str | None
    seq: int | None
    rejected: bool


class Logs(NamedTuple):
    """Appends to task logs, gathered: each task's lines go in with one call."""

    operations: list[Pending]


class Prune(NamedTuple):
    """A prune, applied after everything before it."""

    name: str
    payload: Any
    values: dict[str, Any]
    instance_id: str
    seq: int


class PreparedBatch:
    """A batch decoded, checked against the sequence book and bound to statements: what its
    transaction will do, in order. Preparing needs no lock; `apply` runs inside the transaction
    and may run again after a rolled-back attempt.

    Appends to task logs wait for the end of the batch, or for an operation that could change
    their outcome (a create_task of their task, a prune), and then each task's lines go in
    with one call: a column is rewritten once per batch however its appends interleave with
    other operations (a thousand appends, each between two audit events, rewrote a 50 KB
    column a thousand times: 383 ms). Nothing else in a batch reads or writes a log, so it
    commits what applying each operation in turn would; only the dead letters of failed
    appends come after those of the batch's later operations.
    """

    def __init__(self, now: str, raw_kept: int) -> None:
        self.now = now
        self.raw_kept = raw_kept
        self.result = BatchResult()  # what preparing found; `apply` adds what applying did
        self.steps: list[Run | DeadLetter | Logs | Prune] = []
        self.pending_seq: dict[str, int] = {}  # instance -> the last seq this batch applies
        self.entries: dict[str, InstanceEntry] = {}  # instances of this batch, as the book or a hello says
        # Clock-skew estimates to store with this batch (writer/remote.py), by instance.
        self.clock_skews: dict[str, int] = {}
        self._run_statement: statements.Statement | None = None
        self._run: list[Pending] = []
        self._log_ops: list[Pending] = []  # appends waiting, in the order received
        self._log_tasks: set[str] = set()  # the tasks they append to

    def dead_letter(
        self, raw: bytes, reason: str, instance_id: str | None, seq: int | None, *, rejected: bool = False
    ) -> None:
        """Record a dead letter; at most `raw_kept` bytes of what was received are kept."""
        if len(raw) > self.raw_kept:
            # 24 garbage messages of 16 MiB once made 384 MiB of dead letters: keep the start.
            reason = f"{reason}; raw cut to {self.raw_kept} of {len(raw)} bytes"
            raw = raw[: self.raw_kept]
        self.steps.append(DeadLetter(raw, reason, instance_id, seq, rejected))

    def reject(self, name: str, payload: Any, reason: str, instance_id: str, seq: int) -> None:
        """A dead letter for one operation of an in-order message, counted against its instance."""
        self.dead_letter(codec.encode_operation(name, payload), reason, instance_id, seq, rejected=True)

    def add(self, statement: statements.Statement, op: Pending) -> None:
        """Record one operation; a run of the same statement becomes one executemany."""
        if statement is _APPEND_LOG:
            self._log_ops.append(op)
            self._log_tasks.add(op.params[LOG_TASK_ID])
            return
        if statement is _CREATE_TASK and op.params[_CREATED_TASK_ID] in self._log_tasks:
            # Appends before it were to a task that did not exist yet (or to the one that does).
            self.close_run()
            self.close_logs()
        if statement is not self._run_statement:
            self.close_run()
            self._run_statement = statement
        self._run.append(op)

    def close_run(self) -> None:
        """End the current run of one statement (at a change of statement, a prune, the end)."""
        if self._run_statement is not None and self._run:
            self.steps.append(Run(self._run_statement, self._run))
        self._run_statement, self._run = None, []

    def close_logs(self) -> None:
        """Let the appends waiting go in now (before a create_task of their task, a prune, the end)."""
        if self._log_ops:
            self.steps.append(Logs(self._log_ops))
        self._log_ops = []
        self._log_tasks = set()

    def finish(self) -> None:
        """End preparing: the last run, then the appends still waiting."""
        self.close_run()
        self.close_logs()

    def prune(self, name: str, payload: Any, values: dict[str, Any], instance_id: str, seq: int) -> None:
        """Record a prune, to be applied after everything before it, in order."""
        self.close_run()
        self.close_logs()
        self.steps.append(Prune(name, payload, values, instance_id, seq))

    def apply(
        self,
        conn: sqlite3.Connection,
        book: SequenceBook,
        *,
        dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
        dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
        log_column_max_bytes: int = task_logs.LOG_COLUMN_MAX_BYTES,
    ) -> BatchResult:
        """Inside the caller's open transaction: do what was prepared; return what happened.

        Raises sqlite3.Error for faults of the database as a whole; the caller rolls back and
        may call it again. `book` is only read. `log_column_max_bytes` bounds each task's
        `logs` column (protocol/task_logs.py).
        """
        result = replace(self.result, registered=dict(self.result.registered), rejected_total={})
        applier = _Applier(conn, result, self.now, log_column_max_bytes)
        applier.apply_steps(self.steps)
        seq_rows, heard_rows = self.instance_rows(result, applier.rejected)
        for row in seq_rows:
            conn.execute(statements.RECORD_INSTANCE_SEQ, row)
        for row in heard_rows:
            conn.execute(statements.RECORD_INSTANCE_HEARD, row)
        self.settle(
            result,
            book,
            applier.raw_bytes,
            read_total=lambda: int(conn.execute(statements.DEAD_LETTER_BYTES).fetchone()[0]),
            trim_rows=lambda: trim_dead_letters_measured(conn, dead_letters_kept),
            trim_bytes=lambda total: trim_dead_letter_bytes(conn, total, dead_letter_bytes_kept),
        )
        return result

    def instance_rows(
        self, result: BatchResult, rejected: Mapping[str, int]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The instance rows applying records: (last seq and rejected total, heard from); fills
        `result.rejected_total`. `rejected` counts the operations refused as the batch ran."""
        now = self.now
        seq_rows = []
        for instance_id, seq in self.pending_seq.items():
            rejected_total = self.entries[instance_id].rejected + rejected.get(instance_id, 0)
            result.rejected_total[instance_id] = rejected_total
            seq_rows.append({"instance_id": instance_id, "seq": seq, "now": now, "rejected": rejected_total})
        heard_rows = []
        for instance_id in result.heard:
            skew = self.clock_skews.get(instance_id)
            if instance_id not in self.pending_seq or skew is not None:
                heard_rows.append({"instance_id": instance_id, "now": now, "clock_skew_us": skew})
        return seq_rows, heard_rows

    def settle(
        self,
        result: BatchResult,
        book: SequenceBook,
        raw_bytes: int,
        *,
        read_total: Callable[[], int],
        trim_rows: Callable[[], tuple[int, int]],
        trim_bytes: Callable[[int], tuple[int, int]],
    ) -> None:
        """After the steps: trim the dead letters to their limits and complete `result`.

        `raw_bytes` is what this batch's dead letters added; `read_total` reads the table's
        raw bytes (once per writer: the book keeps the sum after that); `trim_rows` and
        `trim_bytes` drop the oldest rows past the limits, returning (rows dropped, bytes freed).
        """
        if result.dead_letters:
            known = book.dead_letter_bytes()
            total = read_total() if known is None else known + raw_bytes  # the sum counts this batch too
            dropped, freed = trim_rows()
            total -= freed
            more, freed = trim_bytes(total)
            result.dead_letters_dropped = dropped + more
            result.dead_letter_bytes = total - freed
        else:
            result.dead_letter_bytes = book.dead_letter_bytes()
        result.committed_seq = dict(self.pending_seq)


class StepApplier:
    """What both backends' appliers share: the order of the steps, and counting dead letters.

    A subclass stores dead letters and runs the steps its own way (writer/batch.py's
    `_Applier` for SQLite, writer/pg_batch.py's `PostgresApplier`).
    """

    def __init__(self, result: BatchResult, now: str) -> None:
        self.result = result
        self.now = now
        self.raw_bytes = 0  # raw bytes of the dead letters this batch inserted
        self.rejected: dict[str, int] = {}  # instance -> operations refused in this batch

    def apply_steps(self, steps: Iterable[Run | DeadLetter | Logs | Prune]) -> None:
        """Do the prepared steps, in order."""
        for step in steps:
            if type(step) is Run:
                self.run(step)
            elif type(step) is DeadLetter:
                self.dead_letter(step)
            elif type(step) is Logs:
                self.logs(step)
            else:
                assert type(step) is Prune
                self.prune(step)

    def run(self, step: Run) -> None:
        """One run of one statement."""
        raise NotImplementedError

    def logs(self, step: Logs) -> None:
        """Appends to task logs, gathered by task."""
        raise NotImplementedError

    def prune(self, step: Prune) -> None:
        """Record a prune job."""
        raise NotImplementedError

    def dead_letter(self, letter: DeadLetter) -> None:
        """Store one dead letter, then `count` it."""
        raise NotImplementedError

    def count(self, letter: DeadLetter) -> None:
        """Count a stored dead letter: its bytes, and against its instance if it was rejected."""
        self.raw_bytes += len(letter.raw)
        self.result.dead_letters += 1
        if letter.rejected and letter.instance_id is not None:
            self.rejected[letter.instance_id] = self.rejected.get(letter.instance_id, 0) + 1
        log.debug("dead letter from %r seq %s: %s", letter.instance_id, letter.seq, letter.reason)

    def reject(self, name: str, payload: Any, reason: str, instance_id: str, seq: int) -> None:
        """A dead letter for one operation that failed as it ran, counted against its instance."""
        self.dead_letter(DeadLetter(codec.encode_operation(name, payload), reason, instance_id, seq, True))

    def reject_missing(self, op: Pending) -> None:
        """A dead letter for an operation whose statement must change a row and found none."""
        target = op.payload.get("id", op.instance_id) if isinstance(op.payload, dict) else op.instance_id
        self.reject(op.name, op.payload, f"{op.name}: no record with id {target!r}", op.instance_id, op.seq)


class _Applier(StepApplier):
    """Runs a prepared batch's steps: each run of one statement as one executemany."""

    def __init__(
        self, conn: sqlite3.Connection, result: BatchResult, now: str, log_column_max_bytes: int
    ) -> None:
        super().__init__(result, now)
        self.conn = conn
        self.log_column_max_bytes = log_column_max_bytes
        # One cursor for the batch: Connection.execute makes a new one for every statement.
        self.cursor = conn.cursor()

    def dead_letter(self, letter: DeadLetter) -> None:
        row = (self.now, letter.instance_id, letter.seq, letter.reason, letter.raw)
        self.conn.execute(statements.INSERT_DEAD_LETTER, row)
        self.count(letter)

    def run(self, step: Run) -> None:
        statement, run = step
        if len(run) > 1:
            # All at once inside a savepoint; if any one fails, undo the run and go one by one
            # so that only the failing operations become dead letters.
            self.cursor.execute("SAVEPOINT run")
            try:
                changed = self.cursor.executemany(statement.sql, [op.params for op in run]).rowcount
                ok = not statement.must_change_a_row or changed == len(run)
            except Exception as exc:
                if isinstance(exc, sqlite3.Error) and not _is_statement_error(exc):
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

    def logs(self, step: Logs) -> None:
        """Appends: each task's lines in one call, in order, so its column is rewritten once.

        Rewriting a column costs its size whatever is appended, so lines are gathered by task;
        only the order of one task's lines matters. Each task's appends apply or fail together
        (append_lines is all or nothing); an append that fails, to a task that does not exist
        or otherwise, is a dead letter of its own, as any other operation.
        """
        lines: dict[str, list[str]] = {}
        for op in step.operations:
            lines.setdefault(op.params[LOG_TASK_ID], []).append(op.params[LOG_LINE])
        failed: dict[str, str] = {}  # task id -> why its appends are dead letters
        for task_id, task_lines in lines.items():
            try:
                if not append_lines(self.cursor, task_id, task_lines, self.now, self.log_column_max_bytes):
                    failed[task_id] = f"no record with id {task_id!r}"
            except sqlite3.Error as exc:
                if not _is_statement_error(exc):
                    raise
                failed[task_id] = str(exc)
            except Exception as exc:  # a fault of this code that these lines trigger
                log.exception("appending to the log of task %s failed", task_id)
                failed[task_id] = f"the writer failed applying it: {type(exc).__name__}: {exc}"
        for op in step.operations:
            reason = failed.get(op.params[LOG_TASK_ID]) if failed else None
            if reason is None:
                self.result.operations_applied += 1
            else:
                self.reject(op.name, op.payload, f"{op.name}: {reason}", op.instance_id, op.seq)

    def prune(self, step: Prune) -> None:
        """Record a prune job after everything before it, in order (the writer deletes in chunks later)."""
        try:
            record_prune(self.conn, step.values)
        except sqlite3.Error as exc:
            if not _is_statement_error(exc):
                raise
            self.reject(step.name, step.payload, f"{step.name}: {exc}", step.instance_id, step.seq)
            return
        self.result.operations_applied += 1

    def _one(self, statement: statements.Statement, op: Pending) -> None:
        try:
            changed = self.cursor.execute(statement.sql, op.params).rowcount
        except sqlite3.Error as exc:
            if not _is_statement_error(exc):
                raise
            self.reject(op.name, op.payload, f"{op.name}: {exc}", op.instance_id, op.seq)
            return
        except Exception as exc:  # a value the sqlite3 module cannot bind, say: this operation's
            reason = f"{op.name}: the writer failed applying it: {type(exc).__name__}: {exc}"
            self.reject(op.name, op.payload, reason, op.instance_id, op.seq)
            return
        if changed == 0 and statement.must_change_a_row:
            self.reject_missing(op)
            return
        self.result.operations_applied += 1


def _not_owner_reason(instance_id: str, seq: int, token: str | None, entry: InstanceEntry) -> str:
    if token is None:
        why = "the message carries no token; the instance registered with one"
    elif entry.token_hash is None:
        why = "the message carries a token; the instance registered without one"
    else:
        why = "the message's token is not the one it registered with"
    return f"instance {instance_id} belongs to another sender: {why} (seq {seq} not applied)"


def _registration(envelope: codec.Envelope) -> str | None:
    """None if `envelope` may register its unknown instance; else why it cannot, if it tried to.

    Raises LookupError if it did not try (it does not start with a hello at seq 1).
    """
    operations_ = envelope.operations
    if envelope.seq != 1 or operations_[0][0] != operations.HELLO:
        raise LookupError(envelope.instance_id)
    try:
        values = operations.validate_operation(*operations_[0])
    except InvalidOperation as invalid:
        return invalid.reason
    if values["token"] != envelope.token:
        return "hello: its token is not the message's"
    return None


def prepare_messages(
    conn: Queryable,
    raws: list[bytes],
    book: SequenceBook,
    *,
    now_us: int,
    dead_letter_raw_kept: int = statements.DEAD_LETTER_RAW_KEPT_BYTES,
) -> PreparedBatch:
    """Decode and check `raws` against `book` (reading the file where it must), outside any transaction.

    Most of the writer's work per operation is here (unpacking, the sequence and owner checks,
    binding): done before BEGIN, it leaves the write lock free meanwhile for other programs
    that write the same file. `book` is not changed.
    """
    now = timestamps.format_us(now_us)
    prepared = PreparedBatch(now, dead_letter_raw_kept)
    result = prepared.result
    pending_seq = prepared.pending_seq
    entries = prepared.entries
    fast_binds = binding.FAST_BINDS
    for raw in raws:
        result.messages += 1
        try:
            incoming = codec.decode_incoming(raw)
        except RejectedMessage as rejected:
            prepared.dead_letter(bytes(raw), rejected.reason, rejected.instance_id, rejected.seq)
            continue
        if type(incoming) is codec.InstanceHeartbeat:
            _prepare_heartbeat(conn, prepared, book, raw, incoming)
            continue
        assert type(incoming) is codec.Envelope
        envelope = incoming
        instance_id, seq, token = envelope.instance_id, envelope.seq, envelope.token
        entry = entries.get(instance_id)
        if entry is None:
            entry = book.entry(conn, instance_id)
            if entry is None:
                try:
                    refused = _registration(envelope)
                except LookupError:
                    # Held back, as after a gap: the client resends from seq 1 (its hello), or
                    # registers again. No row and no dead letter: ids cost nothing to make up.
                    result.unknown += 1
                    result.unknown_instances.add(instance_id)
                    continue
                if refused is not None:
                    prepared.dead_letter(
                        bytes(raw),
                        f"{refused}; the message would register instance {instance_id}: none of it applied",
                        instance_id,
                        seq,
                    )
                    continue
                entry = _entry_for(None if token is None else codec.token_digest(token))
                entry.token = token
                result.registered[instance_id] = entry
            entries[instance_id] = entry
        if token != entry.token and not entry.owned_by(token):
            # Not the instance's: no instance id on the row, lest its owner read it as its own.
            prepared.dead_letter(bytes(raw), _not_owner_reason(instance_id, seq, token, entry), None, None)
            result.not_owner += 1
            continue
        result.heard.add(instance_id)
        last = pending_seq.get(instance_id)
        if last is None:
            last = entry.last_seq
        if seq <= last:
            result.duplicates += 1
            continue
        if seq > last + 1:
            result.gaps += 1
            result.gap_instances.add(instance_id)
            continue
        for name, payload in envelope.operations:
            try:
                fast = fast_binds.get(name) if type(name) is str else None  # a list is no key
                bound = fast(payload, instance_id, now) if fast is not None else None
                if bound is not None:
                    statement, params = bound
                    prepared.add(statement, Pending(params, name, payload, instance_id, seq))
                    continue
                try:
                    values = operations.validate_operation(name, payload)
                except InvalidOperation as invalid:
                    prepared.reject(name, payload, invalid.reason, instance_id, seq)
                    continue
                values["instance_id"] = instance_id
                values["now"] = now
                values["at"] = timestamps.format_us(values["at_us"])
                if name == operations.PRUNE:
                    prepared.prune(name, payload, values, instance_id, seq)
                    continue
                if name == operations.HELLO:
                    if values["token"] != token:
                        reason = "hello: its token is not the message's"
                        prepared.reject(name, payload, reason, instance_id, seq)
                        continue
                    values["token_hash"] = entry.token_hash
                statement = statements.statement_for(name, values)
                prepared.add(statement, Pending(statement.bind(values), name, payload, instance_id, seq))
            except Exception as exc:  # a fault of this code that the operation's contents trigger
                log.exception("preparing a %s operation of instance %s failed", name, instance_id)
                reason = f"{name}: the writer failed applying it: {type(exc).__name__}: {exc}"
                prepared.reject(name, payload, reason, instance_id, seq)
        pending_seq[instance_id] = seq
    prepared.finish()
    return prepared


def _prepare_heartbeat(
    conn: Queryable,
    prepared: PreparedBatch,
    book: SequenceBook,
    raw: bytes,
    heartbeat: codec.InstanceHeartbeat,
) -> None:
    """A heartbeat: its instance was heard from, if it is the owner's; a dead letter if not.

    One of an instance the file has no row of is ignored, as a message of one would be held
    back: its hello may be on its way (a resend to a new writer), and ids cost nothing to make up.
    """
    result = prepared.result
    instance_id = heartbeat.instance_id
    entry = prepared.entries.get(instance_id) or book.entry(conn, instance_id)
    if entry is None:
        result.heartbeats_unknown += 1
        return
    if not entry.owned_by(heartbeat.token):
        reason = f"a heartbeat of instance {instance_id} with another token than the one it registered with"
        prepared.dead_letter(bytes(raw), reason, None, None)
        result.not_owner += 1
        return
    result.heard.add(instance_id)
    result.heartbeats[instance_id] = heartbeat.sent_at_us


def prepare_burial(
    conn: Queryable,
    raw: bytes,
    book: SequenceBook,
    *,
    now_us: int,
    reason: str,
    dead_letter_raw_kept: int = statements.DEAD_LETTER_RAW_KEPT_BYTES,
) -> PreparedBatch:
    """A batch of one message the writer could not apply: a dead letter with `reason`.

    If the message is its instance's next one, the instance's sequence moves past it and it
    counts as one rejection (its client's flush() says False, rejections() shows the reason),
    so the messages after it still apply instead of waiting behind it forever.
    """
    prepared = PreparedBatch(timestamps.format_us(now_us), dead_letter_raw_kept)
    prepared.result.messages = 1
    instance_id: str | None = None
    seq: int | None = None
    counted = False
    try:
        envelope: codec.Envelope | None = codec.decode_message(raw)
    except Exception:  # whatever it is, the message is buried with its reason
        envelope = None
    if envelope is not None:
        entry = book.entry(conn, envelope.instance_id)
        if entry is None:
            entry = _register_alone(prepared, envelope)
        if entry is None or entry.owned_by(envelope.token):
            # Another sender's message carries no instance id, lest its owner read it as its own.
            instance_id, seq = envelope.instance_id, envelope.seq
        if entry is not None and instance_id is not None and seq == entry.last_seq + 1:
            prepared.entries[instance_id] = entry
            prepared.pending_seq[instance_id] = seq
            counted = True
    prepared.close_run()  # the hello of a registering message first
    prepared.dead_letter(bytes(raw), reason, instance_id, seq, rejected=counted)
    return prepared


def _register_alone(prepared: PreparedBatch, envelope: codec.Envelope) -> InstanceEntry | None:
    """Of a registering message that is being buried, apply its hello alone; the new entry, or None.

    Otherwise its instance would stay unknown, and its client would send the same message
    again and again.
    """
    try:
        if _registration(envelope) is not None:
            return None
    except LookupError:
        return None
    name, payload = envelope.operations[0]
    try:
        values = operations.validate_operation(name, payload)
        entry = _entry_for(None if envelope.token is None else codec.token_digest(envelope.token))
        entry.token = envelope.token
        values.update(instance_id=envelope.instance_id, now=prepared.now, token_hash=entry.token_hash)
        values["at"] = timestamps.format_us(values["at_us"])
        statement = statements.statement_for(name, values)
        params = statement.bind(values)
    except Exception:  # the hello itself is what fails: the instance stays unknown
        log.exception("the hello of instance %s cannot be applied either", envelope.instance_id)
        return None
    prepared.add(statement, Pending(params, name, payload, envelope.instance_id, envelope.seq))
    prepared.result.registered[envelope.instance_id] = entry
    return entry


def apply_messages(
    conn: sqlite3.Connection,
    raws: list[bytes],
    book: SequenceBook,
    *,
    now_us: int,
    dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
    dead_letter_raw_kept: int = statements.DEAD_LETTER_RAW_KEPT_BYTES,
    dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
    log_column_max_bytes: int = task_logs.LOG_COLUMN_MAX_BYTES,
) -> BatchResult:
    """Prepare and apply `raws` inside the caller's open transaction; return what happened.

    Raises sqlite3.Error for faults of the database as a whole; the caller rolls back and
    keeps the batch. `book` is not changed: the caller commits `result.committed_seq`,
    `result.rejected_total`, `result.registered` and `result.dead_letter_bytes` to it after COMMIT.
    """
    prepared = prepare_messages(conn, raws, book, now_us=now_us, dead_letter_raw_kept=dead_letter_raw_kept)
    return prepared.apply(
        conn,
        book,
        dead_letters_kept=dead_letters_kept,
        dead_letter_bytes_kept=dead_letter_bytes_kept,
        log_column_max_bytes=log_column_max_bytes,
    )
