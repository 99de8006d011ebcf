"""Retention: a prune deletes whole finished workflows with their tasks and events, in chunks.

A prune over a million old workflows deleted in one transaction took 10.5 s: far past the
lease's stale limit, so the writer rolled it back and fenced itself off, and so did every
writer after it that retried the same batch. So a prune operation, applied in its batch, only
records a job (`prune_jobs`, id = the operation's id): O(1), in order with everything the
client sent before it. The writer then deletes from the loop between batches, one bounded
chunk per short transaction of its own under the lease, which also adds the chunk's counts to
the job. A writer that takes over (or starts again) goes on with an unfinished job from the
file, so a crash loses at most one chunk's work, and never counts it twice. The chunk that
finds nothing left writes the report audit event (id = the operation's id, as before) and
marks the job finished, in one transaction: the report appears exactly once.

A chunk takes up to `workflows` workflows matching the job (oldest first within each status)
and deletes what goes with them, at most `rows` rows in all, then the workflows themselves
once nothing of theirs is left. A workflow with more tasks and events than that takes several
chunks; a chunk slower than CHUNK_SLOW_S halves the next chunks' sizes (a slow disk, a file
shared with the Rust core), and fast ones grow them back.

What is deleted is decided chunk by chunk: a workflow created before the cutoff that reaches
one of the job's statuses while the job runs goes too, as it would with a prune sent then.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..database import is_busy, is_environmental
from ..protocol import statements, timestamps
from ..protocol.errors import LeaseLostError

log = logging.getLogger("see_persistence.writer")

# Measured with tools/prune_chunks.py on 2 vCPUs shared with other test runs (load 3-4): at
# 1,000,000 old workflows with a task and an audit event each, a chunk of 500 workflows (1,500
# rows) took a median 11.3 ms, p99 39.6 ms, max 145 ms (the old single transaction: 26.4 s);
# with 10 tasks and 20 events each, a chunk of 5,000 rows a median 17 ms, max 66 ms. Far
# inside the lease's SELF_FENCE_AFTER_S (4 s), and short enough that a client's batch waiting
# behind one is not noticed.
CHUNK_WORKFLOWS = 500
CHUNK_ROWS = 5_000  # tasks, audit events and task children together, per chunk
CHUNK_MIN_WORKFLOWS = 8
CHUNK_MIN_ROWS = 64
CHUNK_SLOW_S = 0.25  # a chunk that took longer halves the next ones
CHUNK_FAST_S = 0.05  # one that took less grows them back (up to the sizes above)
BUSY_CHUNK_INTERVAL_S = 0.1  # while messages wait: at most one chunk this often
IDLE_SLICE_S = 0.5  # while none wait: chunks back to back for up to this, then the loop's own work
LOOK_INTERVAL_S = 1.0  # how often the file is searched for an unfinished job when none is known
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# Chunks of one job that may fail in a row for what they delete (another program's trigger, a
# fault of this code), not for the database (locked, full, I/O): then the job is given up,
# with the reason in prune_jobs.error, rather than retried forever.
CHUNK_ATTEMPTS = 5

_recorded = 0  # jobs recorded by this process: a hint that a look into the file is worth it


@dataclass(frozen=True)
class PruneStatements:
    """The SQL of prune jobs for one backend (SQLite's: protocol/statements.py; PostgreSQL's:
    writer/pg_retention.py), each with its placeholders and in the order documented there."""

    record: str
    unfinished: str
    count_chunk: str
    job_counts: str
    finish: str
    give_up: str
    report: str
    chunk_workflows: Callable[[int], str]
    child_deletes: tuple[tuple[str, str], ...]
    prune_workflows: str


SQLITE_PRUNE = PruneStatements(
    record=statements.RECORD_PRUNE_JOB,
    unfinished=statements.UNFINISHED_PRUNE_JOB,
    count_chunk=statements.COUNT_PRUNE_CHUNK,
    job_counts=statements.PRUNE_JOB_COUNTS,
    finish=statements.FINISH_PRUNE_JOB,
    give_up=statements.GIVE_UP_PRUNE_JOB,
    report=statements.PRUNE_REPORT,
    chunk_workflows=statements.prune_chunk_workflows,
    child_deletes=statements.PRUNE_CHILD_DELETES,
    prune_workflows=statements.PRUNE_WORKFLOWS,
)


def _sqlite_environmental(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and is_environmental(exc)


def _sqlite_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and is_busy(exc)


@dataclass(frozen=True)
class PruneJob:
    """An unfinished prune as the file holds it: what to delete, and what it deleted so far."""

    id: str
    older_than: str
    statuses: list[str]
    instance_id: str | None
    counts: dict[str, int]
    chunks: int


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk deleted, per table, and whether it finished the job."""

    counts: dict[str, int]
    finished: bool


def record_prune(conn: Any, values: dict[str, Any], sql: PruneStatements = SQLITE_PRUNE) -> None:
    """Inside the batch's transaction: record the prune as a job for the writer to carry out.

    O(1) whatever the prune will delete. A second prune with the same id (someone resending a
    prune under another sequence number) fails the primary key: a dead letter, as before.
    """
    global _recorded
    conn.execute(
        sql.record,
        (
            values["id"],
            timestamps.format_us(values["older_than_us"]),
            json.dumps(values["statuses"]),
            values["instance_id"],
            values["now"],
        ),
    )
    _recorded += 1


def unfinished_job(conn: Any, sql: PruneStatements = SQLITE_PRUNE) -> PruneJob | None:
    """The oldest prune job not finished yet, or None."""
    row = conn.execute(sql.unfinished).fetchone()
    if row is None:
        return None
    job_id, older_than, statuses, instance_id, workflows, tasks, events, chunks = row
    counts = {"workflow_executions": workflows, "task_executions": tasks, "audit_events": events}
    return PruneJob(job_id, older_than, list(json.loads(statuses)), instance_id, counts, chunks)


def prune_chunk(
    conn: Any,
    job: PruneJob,
    now_us: int,
    workflows: int = CHUNK_WORKFLOWS,
    rows: int = CHUNK_ROWS,
    sql: PruneStatements = SQLITE_PRUNE,
) -> ChunkResult:
    """Inside an open transaction: delete one chunk of `job` and count it; finish the job if done.

    At most `workflows` workflows and `rows` of what goes with them. The job is finished, with
    its report audit event, by the chunk that finds fewer than `workflows` workflows left and
    deletes all of them: then nothing the prune names is left.
    """
    if workflows < 1 or rows < 1:
        raise ValueError("a chunk deletes at least one workflow and one row")
    now = timestamps.format_us(now_us)
    select = sql.chunk_workflows(len(job.statuses))
    ids = [row[0] for row in conn.execute(select, (*job.statuses, job.older_than, workflows)).fetchall()]
    counts = {"workflow_executions": 0, "task_executions": 0, "audit_events": 0}
    done = True
    if ids:
        chunk_ids = json.dumps(ids)
        budget = rows
        for table, delete in sql.child_deletes:
            deleted = max(conn.execute(delete, (chunk_ids, budget)).rowcount, 0)
            if table in counts:
                counts[table] += deleted
            budget -= deleted
            if budget <= 0:
                done = False  # perhaps more of theirs: the next chunk takes the same workflows
                break
        if done:
            deleted = conn.execute(sql.prune_workflows, (chunk_ids,)).rowcount
            counts["workflow_executions"] = max(deleted, 0)
            done = len(ids) < workflows
    conn.execute(
        sql.count_chunk,
        (
            counts["workflow_executions"],
            counts["task_executions"],
            counts["audit_events"],
            now,
            job.id,
        ),
    )
    if done:
        _finish(conn, job, now, sql)
    return ChunkResult(counts, done)


def _finish(conn: Any, job: PruneJob, now: str, sql: PruneStatements) -> None:
    """Write the job's report audit event (id = the prune's id) and mark it finished."""
    workflows, tasks, events = conn.execute(sql.job_counts, (job.id,)).fetchone()
    counts = {"workflow_executions": workflows, "task_executions": tasks, "audit_events": events}
    report = {**counts, "older_than": job.older_than, "statuses": job.statuses}
    message = (
        f"pruned {workflows} workflows created before {job.older_than}"
        f" ({', '.join(job.statuses)}), with {tasks} tasks and {events} audit events"
    )
    conn.execute(sql.report, (job.id, message, now, json.dumps(report), job.instance_id))
    conn.execute(sql.finish, (now, now, job.id))
    log.info("%s", message)


class _Pollable(Protocol):
    def poll(self, timeout: int | None = ...) -> int: ...


Transaction = Callable[[int], AbstractContextManager[Any]]


class PruneRunner:
    """Carries out the file's prune jobs from the writer's loop, a short transaction per chunk.

    `run()` is called once per turn of the loop. While messages wait in `incoming` it takes at
    most one chunk every BUSY_CHUNK_INTERVAL_S, so clients' batches keep flowing; while none
    do, chunk after chunk for up to IDLE_SLICE_S, then returns so the loop does its own work.
    `transaction(now_us)` is the writer lease's (each chunk is fenced, and renews the
    heartbeat); `committed` is told of every commit (the checkpointer).

    On another backend: `sql` its statements, `db_errors` its errors, `environmental` which
    of them are the database's rather than the job's (retried, never counted against it),
    `busy` which say it is locked; `conn` a callable giving the connection to look with, when
    the writer may replace its connection (PostgreSQL, after a broken one).
    """

    def __init__(
        self,
        conn: sqlite3.Connection | Callable[[], Any],
        transaction: Transaction,
        incoming: _Pollable,
        stop: threading.Event,
        committed: Callable[[], None] = lambda: None,
        *,
        sql: PruneStatements = SQLITE_PRUNE,
        db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,),
        environmental: Callable[[BaseException], bool] = _sqlite_environmental,
        busy: Callable[[BaseException], bool] = _sqlite_busy,
    ) -> None:
        self._conn_of: Callable[[], Any] = (lambda: conn) if isinstance(conn, sqlite3.Connection) else conn
        self._sql = sql
        self._db_errors = db_errors
        self._environmental = environmental
        self._busy = busy
        self._transaction = transaction
        self._incoming = incoming
        self._stop = stop
        self._committed = committed
        self._job: PruneJob | None = None
        self._seen_recorded = _recorded - 1  # a first look at once: a job left by another writer
        self._next_look = 0.0
        self._not_before = 0.0  # the next chunk: spacing while busy, or backing off after an error
        self._retry_s = RETRY_MIN_S
        self._failing = False
        self._own_failures = 0  # chunks of the current job that failed in a row, not for the database
        self.workflows = CHUNK_WORKFLOWS
        self.rows = CHUNK_ROWS

    @property
    def active(self) -> bool:
        """True while a job is known to be unfinished."""
        return self._job is not None

    def run(self) -> None:
        """Do what is due of the prune jobs: nothing, one chunk, or a slice of chunks."""
        now = time.monotonic()
        if now < self._not_before or self._stop.is_set():
            return  # stopping: the next writer goes on with the job
        if self._job is None and not self._look(now):
            return
        if self._yield():
            self._chunk()
            self._not_before = max(self._not_before, time.monotonic() + BUSY_CHUNK_INTERVAL_S)
            return
        deadline = now + IDLE_SLICE_S
        while self._job is not None and self._chunk() and not self._yield():
            if time.monotonic() >= deadline:
                break

    def _chunk(self) -> bool:
        """One chunk of the current job in a transaction of its own; True if another may follow.

        Not after a failed chunk, nor after a slow one: the writer's loop then gets its turn at
        once (a chunk that overran the lease's limit must be followed by the writer standing
        aside, which the loop does, not by more commits).
        """
        started = time.monotonic()
        if not self._commit_chunk():
            return False
        took_s = time.monotonic() - started
        self._adapt(took_s)
        return took_s <= CHUNK_SLOW_S

    def _yield(self) -> bool:
        """True if clients' messages wait (or the writer is stopping): they go first."""
        return self._stop.is_set() or bool(self._incoming.poll(0))

    def _look(self, now: float) -> bool:
        """Find the oldest unfinished job in the file, if it is time to look; True if there is one."""
        if self._seen_recorded == _recorded and now < self._next_look:
            return False
        self._seen_recorded = _recorded
        self._next_look = now + LOOK_INTERVAL_S
        try:
            self._job = unfinished_job(self._conn_of(), self._sql)
        except self._db_errors as exc:
            self._failed("could not look for unfinished prune jobs", exc)
            return False
        if self._job is not None:
            job = self._job
            resumed = f", resuming after {job.chunks} chunks ({job.counts})" if job.chunks else ""
            log.info(
                "pruning workflows created before %s (%s), job %s%s",
                job.older_than,
                ", ".join(job.statuses),
                job.id,
                resumed,
            )
        return self._job is not None

    def _commit_chunk(self) -> bool:
        """One chunk of the current job in a transaction of its own; False if it failed."""
        job = self._job
        assert job is not None
        now_us = time.time_ns() // 1000
        try:
            with self._transaction(now_us) as conn:
                result = prune_chunk(conn, job, now_us, self.workflows, self.rows, self._sql)
        except LeaseLostError:
            raise
        except Exception as exc:
            if self._environmental(exc):
                self._failed(f"a chunk of prune job {job.id} failed", exc)
                return False
            self._own_failures += 1
            if self._own_failures >= CHUNK_ATTEMPTS:
                self._give_up(job, exc)
                return False
            self._failed(f"a chunk of prune job {job.id} failed", exc)
            return False
        self._own_failures = 0
        self._committed()
        if self._failing:
            log.info("prune job %s goes on", job.id)
            self._failing = False
            self._retry_s = RETRY_MIN_S
        if result.finished:
            self._job = None
            self._next_look = 0.0  # another job may wait behind it
        return True

    def _adapt(self, took_s: float) -> None:
        """Halve the chunks after a slow one; grow them back after fast ones."""
        if took_s > CHUNK_SLOW_S:
            workflows = max(CHUNK_MIN_WORKFLOWS, self.workflows // 2)
            rows = max(CHUNK_MIN_ROWS, self.rows // 2)
            if (workflows, rows) != (self.workflows, self.rows):
                log.warning(
                    "a prune chunk took %.2f s: the next ones take at most %d workflows and %d rows",
                    took_s,
                    workflows,
                    rows,
                )
            self.workflows, self.rows = workflows, rows
        elif took_s < CHUNK_FAST_S:
            self.workflows = min(CHUNK_WORKFLOWS, self.workflows * 2)
            self.rows = min(CHUNK_ROWS, self.rows * 2)

    def _give_up(self, job: PruneJob, exc: Exception) -> None:
        """Mark the job failed, with why, so that neither this writer nor the next retries it."""
        error = f"{CHUNK_ATTEMPTS} chunks in a row failed: {type(exc).__name__}: {exc}"
        now_us = time.time_ns() // 1000
        now = timestamps.format_us(now_us)
        try:
            with self._transaction(now_us) as conn:
                conn.execute(self._sql.give_up, (error, now, now, job.id))
        except LeaseLostError:
            raise
        except self._db_errors as failure:
            self._failed(f"could not mark prune job {job.id} failed", failure)
            return
        log.error("gave prune job %s up after %s chunks: %s", job.id, job.chunks, error)
        self._job = None
        self._own_failures = 0
        self._failing = False
        self._retry_s = RETRY_MIN_S
        self._next_look = 0.0  # another job may wait behind it

    def _failed(self, what: str, exc: BaseException) -> None:
        """Log once per run of failures, and try again after a growing pause."""
        if not self._failing:
            busy = self._busy(exc)
            reason = "the database is locked by another process" if busy else str(exc)
            log.error("%s (will retry): %s", what, reason)
        self._failing = True
        self._not_before = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
