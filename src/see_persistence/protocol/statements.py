"""The SQL the writer runs for each operation, derived from the status rules.

Each operation is exactly one statement, so SQLite's statement atomicity is what makes a
failing operation leave no trace while the rest of its batch commits; appends to a task's log
are the exception: the writer gathers a batch's lines per task and applies them as
protocol/task_logs.py says, all of a task's or none (APPEND_TASK_LOG below is the one-line
form, which another program may run, and which names the operation's fields). Parameters are named
after the operation's payload fields plus `now` (RFC 3339 text of when the writer applies it)
and `at` (RFC 3339 text of when the caller made the call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from .operations import (
    APPEND_TASK_LOG,
    AUDIT_EVENT,
    CREATE_TASK,
    CREATE_WORKFLOW,
    GOODBYE,
    HELLO,
    UPDATE_TASK_STATUS,
    UPDATE_WORKFLOW_STATUS,
)
from .status import STATUS_EFFECTS, Status


def _status_update(table: str, status: Status, *, with_output: bool) -> str:
    """The UPDATE that applies `status` to a row of `table` (params: the payload's, :now and :at).

    Within a record completed_at is never before started_at, though :at is the caller's wall
    clock, which may step back between two calls: completed_at is the later of :at and
    started_at, and a started_at set after completion is at most completed_at. Our writer's
    times are all `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, which compare as text in time order;
    a time in another writer's form (the Rust core's nine digits or `Z`, SQLite's
    `YYYY-MM-DD HH:MM:SS`) is compared by julianday(), to the millisecond, and text that is
    no time at all is not compared: :at stands.
    """
    effect = STATUS_EFFECTS[status]
    sets = ["status = :status", "last_updated = :now"]

    def bounded(column: str, pick: str, beyond: str) -> str:
        # :at, or `column` where `column` is `beyond` it (">": later; "<": earlier). :at is
        # named once, in a subquery: each mention is a parameter the writer formats and binds.
        return (
            f"(SELECT CASE WHEN {column} IS NULL THEN caller_at"
            f" WHEN {column} GLOB '????-??-??T??:??:??.??????+00:00' THEN {pick}(caller_at, {column})"
            f" WHEN julianday({column}) {beyond} julianday(caller_at) THEN {column} ELSE caller_at END"
            " FROM (SELECT :at AS caller_at))"
        )

    if effect.sets_started_at:
        sets.append(f"started_at = COALESCE(started_at, {bounded('completed_at', 'MIN', '<')})")
    if effect.sets_completed_at:
        sets.append(f"completed_at = {bounded('started_at', 'MAX', '>')}")
    if effect.success is not None:
        sets.append(f"success = {int(effect.success)}")
    sets.append("error_message = COALESCE(:error_message, error_message)")
    if with_output:
        sets.append("output = COALESCE(:output, output)")
    return f"UPDATE {table} SET {', '.join(sets)} WHERE id = :id"


WORKFLOW_STATUS_UPDATES: dict[str, str] = {
    s.value: _status_update("workflow_executions", s, with_output=False) for s in Status
}
TASK_STATUS_UPDATES: dict[str, str] = {
    s.value: _status_update("task_executions", s, with_output=True) for s in Status
}

INSERTS: dict[str, str] = {
    # host_id: the sender's (leases.host_id); a hello without one (a client older than host
    # ids) is of the writer's host, whose id is in the lease it holds in this very transaction.
    # boot_id: the writer's own, from that lease, for an instance on the writer's host only: its
    # pid is checked on this boot. One on another host has none: its heartbeats decide.
    # token_hash: sha256 of the hello's token (NULL without one). The writer lets through
    # only a hello whose sender owns the instance; the WHERE keeps it so in SQL too: a row's
    # token_hash is set by its first hello and never changed.
    HELLO: """INSERT INTO instances (id, pid, process_create_time, host, started_at, last_seen, state,
            boot_id, token_hash, host_id, last_heard_at)
        SELECT :instance_id, :pid, :process_create_time, :host, :at, :now, 'live',
            CASE WHEN COALESCE(:host_id, lease.host_id) IS lease.host_id THEN lease.boot_id END,
            :token_hash, COALESCE(:host_id, lease.host_id), :now
        FROM (SELECT 1) AS one LEFT JOIN writer_lease AS lease ON lease.id = 1
        WHERE true
        ON CONFLICT(id) DO UPDATE SET pid = excluded.pid,
            process_create_time = excluded.process_create_time, host = excluded.host,
            started_at = excluded.started_at, last_seen = excluded.last_seen, state = 'live',
            ended_at = NULL, boot_id = excluded.boot_id, host_id = excluded.host_id,
            last_heard_at = excluded.last_heard_at
        WHERE instances.token_hash IS excluded.token_hash""",
    GOODBYE: """UPDATE instances SET state = 'ended', ended_at = :at, last_seen = :now
        WHERE id = :instance_id""",
    CREATE_WORKFLOW: """INSERT INTO workflow_executions
        (id, workflow_name, status, created_at, metadata, instance_id, last_updated)
        VALUES (:id, :workflow_name, 'pending', :at, :metadata, :instance_id, :now)""",
    CREATE_TASK: """INSERT INTO task_executions
        (id, workflow_id, task_name, status, created_at, logs, retry_count, execution_order,
         instance_id, last_updated)
        VALUES (:id, :workflow_id, :task_name, 'pending', :at, '[]', 0, :execution_order,
         :instance_id, :now)""",
    # What the seed's design ran for each line: a whole-column rewrite, O(lines so far). The
    # writer does not run it (writer/task_logs.py); tools/bench.py's naive baseline does.
    APPEND_TASK_LOG: """UPDATE task_executions
        SET logs = json_insert(COALESCE(logs, '[]'), '$[#]', :line), last_updated = :now
        WHERE id = :id""",
    AUDIT_EVENT: """INSERT INTO audit_events
        (id, workflow_id, task_id, event_type, message, timestamp, data, instance_id)
        VALUES (:id, :workflow_id, :task_id, :event_type, :message, :at, :data, :instance_id)""",
}

# Statements whose target row must exist: zero rows changed means the operation named an
# unknown record, which the writer reports as a dead letter rather than ignore.
MUST_CHANGE_A_ROW = frozenset({APPEND_TASK_LOG, GOODBYE, UPDATE_WORKFLOW_STATUS, UPDATE_TASK_STATUS})

# An instance of another host than the writer's that was marked dead for its silence, and is
# heard again, is live again: its heartbeats decide from now on (what was abandoned stays so).
# One of the writer's host, or of none recorded, is never revived: its pid decided.
_REVIVE_REMOTE = """state = CASE WHEN state = 'dead'
            AND host_id <> (SELECT host_id FROM writer_lease WHERE id = 1) THEN 'live' ELSE state END,
        ended_at = CASE WHEN state = 'dead'
            AND host_id <> (SELECT host_id FROM writer_lease WHERE id = 1) THEN NULL ELSE ended_at END"""

# Only an UPDATE: a row is made by a hello, never by a message that merely names an id.
RECORD_INSTANCE_SEQ = f"""UPDATE instances SET last_seq = :seq, last_seen = :now, rejected = :rejected,
        last_heard_at = :now, {_REVIVE_REMOTE}
    WHERE id = :instance_id"""
"""Records how far an instance is committed, its running total of rejected operations, and
that the writer heard from it."""

RECORD_INSTANCE_HEARD = f"""UPDATE instances SET last_heard_at = :now,
        clock_skew_us = COALESCE(:clock_skew_us, clock_skew_us), {_REVIVE_REMOTE}
    WHERE id = :instance_id"""
"""The writer heard from an instance (a heartbeat, a resend): when, and its clock skew if measured."""

INSTANCE_CREDENTIALS = "SELECT last_seq, rejected, token_hash FROM instances WHERE id = ?"
"""What the writer needs of an instance to judge a message: seq, rejected total, owner's token hash."""

# Ended and dead instances, and rows no hello made (older writers made one for any instance
# id a message named: no pid, 'live' forever), idle since the cutoff by the writer's clock
# (last_seen) and by ended_at (the client's clock, for a goodbye): a client's clock set far back
# cannot expire its instance early. Live instances with a pid are never chosen.
EXPIRED_INSTANCES = """SELECT id FROM instances
    WHERE (state IN ('ended', 'dead') OR (state = 'live' AND pid IS NULL))
        AND COALESCE(last_seen, ended_at) < :cutoff AND COALESCE(ended_at, last_seen) < :cutoff
    LIMIT :limit"""

DELETE_INSTANCE = "DELETE FROM instances WHERE id = ?"

INSTANCES_KEPT_S = 30 * 86_400
"""Ended and dead instance rows are deleted once they have been so for this long."""

INSERT_DEAD_LETTER = """INSERT INTO dead_letters (received_at, instance_id, seq, reason, raw)
    VALUES (?, ?, ?, ?, ?)"""

DEAD_LETTERS_KEPT = 100_000
"""The dead-letter table keeps this many rows; older ones are dropped and counted."""

DEAD_LETTER_RAW_KEPT_BYTES = 64 * 1024
"""A dead letter keeps at most this many bytes of what was received; its reason says if cut."""

DEAD_LETTER_BYTES_KEPT = 64 * 1024 * 1024
"""The raw bytes of all dead letters together; past it the oldest rows are dropped and counted."""

DEAD_LETTERS_DROPPED_COUNTER = "dead_letters_dropped"

# Rows only ever leave from the oldest end, so the ids kept are one contiguous range.
TRIM_DEAD_LETTERS = "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?"

# The raw bytes the row cap's trim is about to delete (the same rows as TRIM_DEAD_LETTERS).
DEAD_LETTER_BYTES_TO_TRIM = """SELECT COALESCE(SUM(length(raw)), 0) FROM dead_letters
    WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?"""

# length() of a blob reads the record header, not the blob's pages.
DEAD_LETTER_BYTES = "SELECT COALESCE(SUM(length(raw)), 0) FROM dead_letters"

OLDEST_DEAD_LETTER_SIZES = "SELECT id, COALESCE(length(raw), 0) FROM dead_letters ORDER BY id"

TRIM_DEAD_LETTERS_UP_TO = "DELETE FROM dead_letters WHERE id <= ?"

ADD_TO_COUNTER = """INSERT INTO counters (name, value) VALUES (?, ?)
    ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"""


@dataclass(frozen=True)
class Statement:
    """One operation's SQL with positional placeholders, and how to bind its values."""

    sql: str
    names: tuple[str, ...]
    must_change_a_row: bool
    bind: Callable[[Mapping[str, Any]], tuple[Any, ...]]


_NAMED = re.compile(r":([a-z_]+)")


def _positional(sql: str, must_change_a_row: bool) -> Statement:
    # Positional binding from a tuple is cheaper than looking each name up in a dict, and the
    # writer binds every operation it applies.
    names = tuple(_NAMED.findall(sql))
    getter = itemgetter(*names)
    bind: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
        getter if len(names) > 1 else (lambda values: (getter(values),))
    )
    return Statement(_NAMED.sub("?", sql), names, must_change_a_row, bind)


def _compile() -> dict[tuple[str, str | None], Statement]:
    compiled: dict[tuple[str, str | None], Statement] = {}
    for name, sql in INSERTS.items():
        compiled[(name, None)] = _positional(sql, name in MUST_CHANGE_A_ROW)
    for status, sql in WORKFLOW_STATUS_UPDATES.items():
        compiled[(UPDATE_WORKFLOW_STATUS, status)] = _positional(sql, True)
    for status, sql in TASK_STATUS_UPDATES.items():
        compiled[(UPDATE_TASK_STATUS, status)] = _positional(sql, True)
    return compiled


COMPILED: dict[tuple[str, str | None], Statement] = _compile()


def statement_for(name: str, values: Mapping[str, Any]) -> Statement:
    """The compiled statement that applies operation `name` with validated `values`."""
    if name in (UPDATE_WORKFLOW_STATUS, UPDATE_TASK_STATUS):
        return COMPILED[(name, values["status"])]
    return COMPILED[(name, None)]


# -- retention: a prune job, deleted a bounded chunk at a time (writer/retention.py) -----------

RECORD_PRUNE_JOB = """INSERT INTO prune_jobs (id, older_than, statuses, instance_id, state, created_at)
    VALUES (?, ?, ?, ?, 'running', ?)"""
"""A prune operation, applied in its batch: only the job is recorded (id, cutoff, statuses JSON)."""

UNFINISHED_PRUNE_JOB = """SELECT id, older_than, statuses, instance_id, workflow_executions,
        task_executions, audit_events, chunks
    FROM prune_jobs WHERE state = 'running' ORDER BY created_at, id LIMIT 1"""
"""The oldest job not finished yet (idx_see_prune_jobs_running serves it)."""

COUNT_PRUNE_CHUNK = """UPDATE prune_jobs SET workflow_executions = workflow_executions + ?,
        task_executions = task_executions + ?, audit_events = audit_events + ?,
        chunks = chunks + 1, updated_at = ?
    WHERE id = ?"""

PRUNE_JOB_COUNTS = "SELECT workflow_executions, task_executions, audit_events FROM prune_jobs WHERE id = ?"

FINISH_PRUNE_JOB = "UPDATE prune_jobs SET state = 'finished', finished_at = ?, updated_at = ? WHERE id = ?"

GIVE_UP_PRUNE_JOB = """UPDATE prune_jobs SET state = 'failed', error = ?, finished_at = ?, updated_at = ?
    WHERE id = ? AND state = 'running'"""
"""A job whose chunks failed CHUNK_ATTEMPTS times in a row for something not the database's."""

# The chunk's workflow ids, bound as one JSON array: one parameter whatever the chunk's size.
_CHUNK_IDS = "SELECT value FROM json_each(?)"


def prune_chunk_workflows(status_count: int) -> str:
    """Up to a limit of the ids of workflows a prune deletes: params the statuses, cutoff, limit.

    Served by idx_see_workflow_executions_status_created (status, created_at, id) without
    reading the table: one index range per status, cut at the limit.
    """
    placeholders = ", ".join("?" * status_count)
    return f"SELECT id FROM workflow_executions WHERE status IN ({placeholders}) AND created_at < ? LIMIT ?"


def _bounded_delete(table: str, key: tuple[str, ...], where: str) -> str:
    """DELETE of at most `?` rows of `table` matching `where`, found by their key (rowid, or the
    primary key's columns of a WITHOUT ROWID table: it has no rowid)."""
    columns = ", ".join(key)
    target = key[0] if len(key) == 1 else f"({columns})"
    return f"DELETE FROM {table} WHERE {target} IN (SELECT {columns} FROM {table} WHERE {where} LIMIT ?)"


def delete_children_of_workflows(
    table: str, column: str = "workflow_id", key: tuple[str, ...] = ("rowid",)
) -> str:
    """Delete up to a limit of the rows of `table` whose `column` names a workflow of the chunk.

    Params: the chunk's workflow ids (JSON array), the most rows to delete. `column` must lead
    an index of `table`; `key` names its rows (rowid, or a WITHOUT ROWID table's primary key).
    """
    return _bounded_delete(table, key, f"{column} IN ({_CHUNK_IDS})")


def delete_children_of_tasks(table: str, column: str = "task_id", key: tuple[str, ...] = ("rowid",)) -> str:
    """Delete up to a limit of the rows of `table` whose `column` names a task of the chunk's workflows.

    Params and requirements as delete_children_of_workflows.
    """
    tasks = f"SELECT id FROM task_executions WHERE workflow_id IN ({_CHUNK_IDS})"
    return _bounded_delete(table, key, f"{column} IN ({tasks})")


PRUNE_TASK_CHILD_DELETES: tuple[tuple[str, str], ...] = (
    # A task's log lines past its `logs` column. The foreign key's ON DELETE CASCADE would
    # delete them with their task, but unbounded: a task with a million lines would make one
    # chunk a million deletes. Here they go first, within the chunk's budget.
    ("task_log_lines", delete_children_of_tasks("task_log_lines", key=("task_id", "line_no"))),
)
"""(table, statement) deleting the rows that belong to a pruned task, in its own table.

THE place to add a side table keyed by task id. They run before the tasks themselves are
deleted (while the tasks still name their workflow), within the chunk's row budget; their
counts are not part of the prune's report.
"""

PRUNE_CHILD_DELETES: tuple[tuple[str, str], ...] = (
    *PRUNE_TASK_CHILD_DELETES,
    ("audit_events", delete_children_of_workflows("audit_events")),
    ("task_executions", delete_children_of_workflows("task_executions")),
)
"""Everything that goes with a pruned workflow, in order; its own row goes last (PRUNE_WORKFLOWS)."""

PRUNE_WORKFLOWS = f"DELETE FROM workflow_executions WHERE id IN ({_CHUNK_IDS})"
"""Delete the chunk's workflows, once nothing of theirs is left: param the ids (JSON array)."""

PRUNE_REPORT = """INSERT INTO audit_events
    (id, workflow_id, task_id, event_type, message, timestamp, data, instance_id)
    VALUES (?, NULL, NULL, 'prune', ?, ?, ?, ?)"""
