"""Retention: a prune operation deletes whole finished workflows with their tasks and events."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from ..protocol import statements, timestamps

log = logging.getLogger("see_persistence.writer")


def apply_prune(conn: sqlite3.Connection, values: dict[str, Any]) -> dict[str, int]:
    """Inside the batch's transaction: delete what the prune names, record a report event.

    All of it or none of it: the statements run inside one savepoint. Returns the counts,
    which the report audit event (id = the operation's id) carries as its data.
    """
    cutoff = timestamps.format_us(values["older_than_us"])
    statuses: list[str] = values["statuses"]
    params = (cutoff, *statuses)
    conn.execute("SAVEPOINT prune")
    try:
        audit_sql, task_sql, workflow_sql = statements.prune_statements(len(statuses))
        counts = {
            "audit_events": conn.execute(audit_sql, params).rowcount,
            "task_executions": conn.execute(task_sql, params).rowcount,
            "workflow_executions": conn.execute(workflow_sql, params).rowcount,
        }
        report = {**counts, "older_than": cutoff, "statuses": statuses}
        message = (
            f"pruned {counts['workflow_executions']} workflows created before {cutoff}"
            f" ({', '.join(statuses)}), with {counts['task_executions']} tasks"
            f" and {counts['audit_events']} audit events"
        )
        conn.execute(
            statements.PRUNE_REPORT,
            (values["id"], message, values["now"], json.dumps(report), values["instance_id"]),
        )
    except BaseException:
        conn.execute("ROLLBACK TO prune")
        conn.execute("RELEASE prune")
        raise
    conn.execute("RELEASE prune")
    log.info("%s", message)
    return counts
