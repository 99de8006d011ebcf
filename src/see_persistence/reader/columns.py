"""The columns the Reader selects for each record, and the timestamp columns' reader.

Apart from rows.py (which builds the pydantic models) so that the query modules name their
SQL without loading pydantic: a process that only runs SQL through a Reader (`query`,
`backup`) never loads the record models, and one that returns records loads them on its first.
"""

from __future__ import annotations

from typing import Any

from ..protocol import timestamps

WORKFLOW_COLUMNS = (
    "id, workflow_name, status, created_at, started_at, completed_at, success, error_message,"
    " metadata, instance_id, last_updated"
)
TASK_COLUMNS = (
    "id, workflow_id, task_name, status, created_at, started_at, completed_at, success,"
    " error_message, output, logs, retry_count, execution_order, instance_id, last_updated"
)
AUDIT_COLUMNS = "id, workflow_id, task_id, event_type, message, timestamp, data, instance_id"
WORKFLOW_FIELDS = tuple(name.strip() for name in WORKFLOW_COLUMNS.split(","))
TASK_FIELDS = tuple(name.strip() for name in TASK_COLUMNS.split(","))
AUDIT_FIELDS = tuple(name.strip() for name in AUDIT_COLUMNS.split(","))
LOGS_COLUMN = TASK_FIELDS.index("logs")


def optional_time(text: str | None) -> Any:
    """The aware datetime in a timestamp column (naive text read as UTC); None for NULL or ''."""
    return timestamps.parse(text) if text else None
