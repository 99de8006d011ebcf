"""The SQL the writer runs for each operation, derived from the status rules.

Each operation is exactly one statement, so SQLite's statement atomicity is what makes a
failing operation leave no trace while the rest of its batch commits. Parameters are named
after the operation's payload fields plus `now` (RFC 3339 text of when the writer applies it)
and `at` (RFC 3339 text of when the caller made the call).
"""

from __future__ import annotations

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
    effect = STATUS_EFFECTS[status]
    sets = ["status = :status", "last_updated = :now"]
    if effect.sets_started_at:
        sets.append("started_at = COALESCE(started_at, :at)")
    if effect.sets_completed_at:
        sets.append("completed_at = :at")
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
    HELLO: """INSERT INTO instances (id, pid, process_create_time, host, started_at, last_seen, state)
        VALUES (:instance_id, :pid, :process_create_time, :host, :at, :now, 'live')
        ON CONFLICT(id) DO UPDATE SET pid = excluded.pid,
            process_create_time = excluded.process_create_time, host = excluded.host,
            started_at = excluded.started_at, last_seen = excluded.last_seen, state = 'live',
            ended_at = NULL""",
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

RECORD_INSTANCE_SEQ = """INSERT INTO instances (id, last_seq, last_seen, state)
    VALUES (:instance_id, :seq, :now, 'live')
    ON CONFLICT(id) DO UPDATE SET last_seq = excluded.last_seq, last_seen = excluded.last_seen"""

INSERT_DEAD_LETTER = """INSERT INTO dead_letters (received_at, instance_id, seq, reason, raw)
    VALUES (?, ?, ?, ?, ?)"""

DEAD_LETTERS_KEPT = 100_000
"""The dead-letter table keeps this many rows; older ones are dropped and counted."""

DEAD_LETTERS_DROPPED_COUNTER = "dead_letters_dropped"

# Rows only ever leave from the oldest end, so the ids kept are one contiguous range.
TRIM_DEAD_LETTERS = "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?"

ADD_TO_COUNTER = """INSERT INTO counters (name, value) VALUES (?, ?)
    ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"""
