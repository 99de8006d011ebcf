"""Appending a batch's log lines to one task: into its bounded `logs` column, or past it.

protocol/task_logs.py says where lines go; this runs it on the writer's connection, inside
the caller's transaction. The cost of one call does not grow with the log: below the bound it
rewrites at most LOG_COLUMN_MAX_BYTES of column once, however many lines it is given; past
it, it inserts each line as one row and leaves the column alone.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from ..protocol import task_logs

log = logging.getLogger("see_persistence.writer")


def append_lines(
    cursor: sqlite3.Cursor,
    task_id: str,
    lines: Sequence[str],
    now: str,
    max_bytes: int = task_logs.LOG_COLUMN_MAX_BYTES,
) -> bool:
    """Append `lines`, in order, to the log of task `task_id`; False if there is no such task.

    Sets the task's last_updated to `now`. All or nothing: raises sqlite3.Error as the
    statements do, and then has changed nothing.
    """
    row = cursor.execute(task_logs.SELECT_LOGS, (task_id,)).fetchone()
    if row is None:
        return False
    raw: bytes | None = row[0]
    # Bytes that are not UTF-8 can only come from another program; a Reader could not read
    # them either. Read as text with U+FFFD in their place, the column is rewritten readable.
    text = None if raw is None else raw.decode("utf-8", "replace")
    last: int | None = None
    looked = False
    if text is not None and task_logs.LOG_CONTINUED_JSON in text:
        last = cursor.execute(task_logs.LAST_LINE_NO, (task_id,)).fetchone()[0]
        looked = True
        if last is not None:
            # Spilled: the column is never rewritten again.
            with _savepoint(cursor):
                _insert(cursor, task_id, last + 1, lines)
                cursor.execute(task_logs.TOUCH_TASK, (now, task_id))
            return True
    plan = task_logs.plan_append(text, lines, max_bytes)
    if not plan.spilled:
        # One statement: atomic on its own. Most appends end here, and a savepoint would
        # cost them more than the update does.
        cursor.execute(task_logs.SET_LOGS, (plan.text, now, task_id))
        return True
    first = plan.first_line_no
    if not looked:
        # Rows left from a column that another program reset (it dropped the marker):
        # numbered after them, so nothing collides and nothing is deleted.
        last = cursor.execute(task_logs.LAST_LINE_NO, (task_id,)).fetchone()[0]
    if last is not None:
        first = max(first, last + 1)
    with _savepoint(cursor):
        cursor.execute(task_logs.SET_LOGS, (plan.text, now, task_id))
        _insert(cursor, task_id, first, plan.spilled)
    log.info(
        "the logs column of task %s is full (%d bytes at most): its lines from line %d on go to %s",
        task_id,
        max_bytes,
        first,
        task_logs.LOG_LINES_TABLE,
    )
    return True


class _savepoint:
    """SAVEPOINT ... RELEASE, rolled back to on any exception: several statements as one."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor

    def __enter__(self) -> None:
        self.cursor.execute("SAVEPOINT task_log")

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        if kind is not None:
            self.cursor.execute("ROLLBACK TO task_log")
        self.cursor.execute("RELEASE task_log")


def _insert(cursor: sqlite3.Cursor, task_id: str, first: int, lines: Sequence[str]) -> None:
    cursor.executemany(
        task_logs.INSERT_LINE, [(task_id, first + offset, line) for offset, line in enumerate(lines)]
    )
