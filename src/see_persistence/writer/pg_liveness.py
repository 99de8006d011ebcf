"""The instance liveness sweep and instance retention on PostgreSQL.

The same rules as on SQLite (writer/liveness.py, writer/remote.py, writer/instances.py), with
the same SQL where the two agree (`statements_postgresql.named` turns `:name` into psycopg's
`%(name)s`) and PostgreSQL's own where they do not: "the later of two times" is GREATEST,
which skips a NULL started_at, and `success` is a boolean.

Local instances (of the writer's host id) are judged by pid and create time on the writer's
own host: the hello recorded the writer's boot id for them only (statements_postgresql).
Instances of other host ids live while the writer hears from them (writer/remote.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg

from .. import leases
from ..idgen import new_id
from ..protocol import statements, timestamps
from ..protocol import statements_postgresql as pgsql
from .instances import INSTANCES_DELETED_PER_RUN
from .liveness import _ACTIVE_SQL, CHECKABLE_LIVE_INSTANCES, DeadInstance
from .remote import LIVE_REMOTE_INSTANCES

log = logging.getLogger("see_persistence.writer")

_CHECKABLE = pgsql.named(
    f"SELECT id, pid, process_create_time, host, boot_id FROM instances WHERE {CHECKABLE_LIVE_INSTANCES}"
)
_LIVE_REMOTE = pgsql.named(LIVE_REMOTE_INSTANCES)
_EXPIRED = pgsql.named(statements.EXPIRED_INSTANCES)
_DELETE_INSTANCE = "DELETE FROM instances WHERE id = %s"
_MARK_DEAD = (
    "UPDATE instances SET state = 'dead', ended_at = %s, last_seen = %s WHERE id = %s AND state = 'live'"
)
_ACTIVE_WORKFLOWS = f"SELECT id FROM workflow_executions WHERE instance_id = %s AND status IN ({_ACTIVE_SQL})"
_FAIL_ACTIVE = (
    "UPDATE {table} SET status = 'failed', success = false,"
    " completed_at = GREATEST(CAST(%(now)s AS timestamptz), started_at),"
    " last_updated = %(now)s, error_message = %(reason)s"
    f" WHERE instance_id = %(instance_id)s AND status IN ({_ACTIVE_SQL})"
)
_ABANDONED_EVENT = (
    "INSERT INTO audit_events (id, workflow_id, task_id, event_type, message, timestamp, data, instance_id)"
    " VALUES (%s, %s, NULL, 'workflow_abandoned', %s, %s, %s, %s)"
)


def find_dead_instances(conn: psycopg.Connection[Any]) -> list[DeadInstance]:
    """Live-registered instances of this host whose process no longer runs (liveness.find_dead_instances)."""
    rows = conn.execute(_CHECKABLE, {"host": leases.host_name(), "host_id": leases.host_id()}).fetchall()
    return [
        DeadInstance(iid, pid)
        for iid, pid, ctime, host, boot in rows
        if not leases.is_alive(pid, ctime, host, boot)
    ]


def live_remote_instances(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(id, pid, host) of every live instance of another host id than this writer's."""
    return conn.execute(_LIVE_REMOTE, {"host_id": leases.host_id()}).fetchall()


def abandon(conn: psycopg.Connection[Any], dead: DeadInstance, now_us: int) -> int:
    """Inside an open transaction: mark `dead` and fail what it left active; return workflows failed."""
    now = timestamps.format_us(now_us)
    reason = dead.reason or f"abandoned: instance {dead.instance_id} (pid {dead.pid}) died"
    cursor = conn.cursor()
    cursor.execute(_MARK_DEAD, (now, now, dead.instance_id))
    workflow_ids = [row[0] for row in cursor.execute(_ACTIVE_WORKFLOWS, (dead.instance_id,)).fetchall()]
    for table in ("workflow_executions", "task_executions"):
        cursor.execute(
            _FAIL_ACTIVE.format(table=table), {"now": now, "reason": reason, "instance_id": dead.instance_id}
        )
    data = json.dumps({"instance_id": dead.instance_id, "pid": dead.pid})
    if workflow_ids:
        cursor.executemany(
            _ABANDONED_EVENT, [(new_id(), wid, reason, now, data, dead.instance_id) for wid in workflow_ids]
        )
    log.warning("%s; %d workflow(s) marked failed", reason, len(workflow_ids))
    return len(workflow_ids)


def delete_expired_instances(
    conn: psycopg.Connection[Any], now_us: int, kept_s: float, limit: int = INSTANCES_DELETED_PER_RUN
) -> list[str]:
    """Inside an open transaction: delete up to `limit` expired instance rows (instances.py's rule)."""
    cutoff = timestamps.format_us(max(0, now_us - int(kept_s * 1_000_000)))
    ids = [row[0] for row in conn.execute(_EXPIRED, {"cutoff": cutoff, "limit": limit}).fetchall()]
    if ids:
        conn.cursor().executemany(_DELETE_INSTANCE, [(instance_id,) for instance_id in ids])
    return ids
