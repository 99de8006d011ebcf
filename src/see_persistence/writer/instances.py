"""Retention of instance rows: an instance ended or dead for INSTANCES_KEPT_S is deleted.

Every GUI start registers one instance row, and nothing else removes it: 400 short-lived
GUIs left 400 rows. The writer's sweep deletes, in chunks of INSTANCES_DELETED_PER_RUN, the
rows ended (goodbye) or dead (the liveness sweep) for longer than the period to keep, and
the rows no hello ever made (older writers made one, 'live' with no pid, for any instance id
a message named) idle for as long. A live instance with a pid is never deleted.

A deleted instance's workflows, tasks and events stay (their instance_id names it still); a
message naming it afterwards is one of an unknown instance: held back, never applied, and
answered "unknown". No such message should come: an ended instance said goodbye after the
writer confirmed everything it sent, and a dead one's process is gone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..protocol import statements, timestamps

log = logging.getLogger("see_persistence.writer")

INSTANCES_DELETED_PER_RUN = 500
# Finding the expired rows reads every ended or dead one: once a minute is enough, but right
# after a full chunk, as long as there are more.
RUN_INTERVAL_S = 60.0


def expired_instances(
    conn: sqlite3.Connection, now_us: int, kept_s: float, limit: int = INSTANCES_DELETED_PER_RUN
) -> list[str]:
    """Up to `limit` ids of instances ended, dead or never registered, idle for over `kept_s`."""
    cutoff = timestamps.format_us(max(0, now_us - int(kept_s * 1_000_000)))
    rows = conn.execute(statements.EXPIRED_INSTANCES, {"cutoff": cutoff, "limit": limit}).fetchall()
    return [row[0] for row in rows]


def delete_expired_instances(
    conn: sqlite3.Connection, now_us: int, kept_s: float, limit: int = INSTANCES_DELETED_PER_RUN
) -> list[str]:
    """Inside an open transaction: delete up to `limit` expired instance rows; return their ids."""
    ids = expired_instances(conn, now_us, kept_s, limit)
    if ids:
        conn.executemany(statements.DELETE_INSTANCE, [(instance_id,) for instance_id in ids])
    return ids


class InstanceRetention:
    """When to delete expired instance rows, and doing it in the writer's transactions."""

    def __init__(
        self,
        kept_s: float = statements.INSTANCES_KEPT_S,
        limit: int = INSTANCES_DELETED_PER_RUN,
        *,
        delete: Callable[[Any, int, float, int], list[str]] | None = None,
    ):
        if not kept_s > 0:
            raise ValueError("instances must be kept for a positive time")
        if limit < 1:
            raise ValueError("at least one instance row must be deleted per run")
        self.kept_s = kept_s
        self.limit = limit
        self._next_run = time.monotonic()  # at the first sweep
        # The deletion in the backend's SQL (writer/pg_liveness.py has PostgreSQL's).
        self._delete = delete if delete is not None else delete_expired_instances

    def run_if_due(
        self,
        transaction: Callable[[int], AbstractContextManager[Any]],
        now_us: int,
    ) -> list[str]:
        """Delete one chunk of expired rows if it is time; return the ids deleted.

        `transaction(now_us)` is the writer lease's: the delete commits only under the lease.
        """
        now = time.monotonic()
        if now < self._next_run:
            return []
        self._next_run = now + RUN_INTERVAL_S
        with transaction(now_us) as conn:
            ids = self._delete(conn, now_us, self.kept_s, self.limit)
        if len(ids) >= self.limit:
            self._next_run = now  # more may wait: the next sweep takes the next chunk
        if ids:
            log.info(
                "deleted %d instance rows ended, dead or unregistered for over %g days",
                len(ids),
                self.kept_s / 86_400,
            )
        return ids
