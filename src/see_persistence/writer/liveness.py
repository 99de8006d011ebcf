"""The instance liveness sweep: GUI instances whose process is gone are marked dead, and
the workflows and tasks they left pending or running become failed, "abandoned: ...".

Dead means the pid checked with psutil (gone, a zombie, or reused by a process with another
create time), never a quiet spell: nothing is deleted because an instance is idle. An
instance of another boot is dead too: after a reboot none of the previous boot's processes
runs, whatever the machine is called now (leases.is_alive has the rule).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from .. import leases
from ..idgen import new_id
from ..protocol import timestamps
from ..protocol.status import ACTIVE_STATUSES

log = logging.getLogger("see_persistence.writer")

SWEEP_INTERVAL_S = 1.0
_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)
_ACTIVE_SQL = ", ".join(f"'{s}'" for s in _ACTIVE)
# completed_at is :now (the writer's clock), but never before the row's started_at (the
# caller's clock, which may run ahead of it after a step): the rule of statements._status_update.
_NOT_BEFORE_STARTED = (
    "CASE WHEN started_at IS NULL THEN :now"
    " WHEN started_at GLOB '????-??-??T??:??:??.??????+00:00' THEN MAX(:now, started_at)"
    " WHEN julianday(started_at) > julianday(:now) THEN started_at ELSE :now END"
)


@dataclass(frozen=True)
class DeadInstance:
    """A registered instance whose process is gone (or, on another host, that fell silent)."""

    instance_id: str
    pid: int
    reason: str | None = None  # the error its abandoned records get; None: "... (pid N) died"


# The live-registered instances whose process this writer can judge: those of its own host id
# (or of none: rows from before host ids), and of those every one with a boot id (a boot id
# decides by itself, whatever the host name: leases.is_alive), and the older rows without one
# on this host name. A row without a boot id from another host name is left alone, as before
# boot ids: it cannot be checked from here. Another host id's instances live by heartbeats
# (writer/remote.py).
CHECKABLE_LIVE_INSTANCES = (
    "state = 'live' AND pid IS NOT NULL AND (boot_id IS NOT NULL OR host = :host)"
    " AND (host_id IS NULL OR host_id = :host_id)"
)


def find_dead_instances(conn: sqlite3.Connection) -> list[DeadInstance]:
    """Live-registered instances whose process no longer runs: gone, reused, or of another boot."""
    rows = conn.execute(
        f"SELECT id, pid, process_create_time, host, boot_id FROM instances WHERE {CHECKABLE_LIVE_INSTANCES}",
        {"host": leases.host_name(), "host_id": leases.host_id()},
    ).fetchall()
    return [
        DeadInstance(iid, pid)
        for iid, pid, ctime, host, boot in rows
        if not leases.is_alive(pid, ctime, host, boot)
    ]


def abandon(conn: sqlite3.Connection, dead: DeadInstance, now_us: int) -> int:
    """Inside an open transaction: mark `dead` and fail what it left active; return workflows failed."""
    now = timestamps.format_us(now_us)
    reason = dead.reason or f"abandoned: instance {dead.instance_id} (pid {dead.pid}) died"
    conn.execute(
        "UPDATE instances SET state = 'dead', ended_at = ?, last_seen = ? WHERE id = ? AND state = 'live'",
        (now, now, dead.instance_id),
    )
    workflow_ids = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM workflow_executions WHERE instance_id = ? AND status IN ({_ACTIVE_SQL})",
            (dead.instance_id,),
        )
    ]
    for table in ("workflow_executions", "task_executions"):
        conn.execute(
            f"UPDATE {table} SET status = 'failed', success = 0, completed_at = {_NOT_BEFORE_STARTED},"
            f" last_updated = :now, error_message = :reason"
            f" WHERE instance_id = :instance_id AND status IN ({_ACTIVE_SQL})",
            {"now": now, "reason": reason, "instance_id": dead.instance_id},
        )
    data = json.dumps({"instance_id": dead.instance_id, "pid": dead.pid})
    conn.executemany(
        "INSERT INTO audit_events"
        " (id, workflow_id, task_id, event_type, message, timestamp, data, instance_id)"
        " VALUES (?, ?, NULL, 'workflow_abandoned', ?, ?, ?, ?)",
        [(new_id(), wid, reason, now, data, dead.instance_id) for wid in workflow_ids],
    )
    log.warning("%s; %d workflow(s) marked failed", reason, len(workflow_ids))
    return len(workflow_ids)
