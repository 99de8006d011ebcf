"""What the writer leaves in the file for readers: its lease, its published counters, the row counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .columns import optional_time
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import WriterStatus


@dataclass(frozen=True)
class WriterLease:
    """The writer lease row, read and judged: the fields of `WriterStatus`, without pydantic.

    A Client reads the lease from its sending thread; the models (pydantic) would add about
    80 ms of CPU to the start of every process that only records.
    """

    pid: int
    host: str
    endpoint: str
    epoch: int
    since: datetime
    heartbeat: datetime
    released: datetime | None
    alive: bool
    boot_id: str | None
    host_id: str | None
    heartbeat_age_s: float | None
    endpoints: tuple[tuple[str, str], ...]
    public_key: str | None


_COUNTED_TABLES = ("workflow_executions", "task_executions", "audit_events", "instances", "dead_letters")


class WriterStateQueries(ReadConnection):
    """The writer's side of the file: get_writer_status, writer_lease, get_counters, count_rows."""

    def get_writer_status(self) -> WriterStatus | None:
        """The writer lease and whether its holder is alive; None if no writer ever ran."""
        from ..protocol.models import WriterStatus  # here: the models load with the first lease read

        lease = self.writer_lease()
        return None if lease is None else WriterStatus(**vars(lease))

    def writer_lease(self) -> WriterLease | None:
        """What `get_writer_status` says, as plain values: a Client reads this without the models."""
        from .. import leases  # here: psutil loads with the first lease read, not with the Reader

        if not self._has("writer_lease"):  # a file no writer of ours has upgraded yet
            return None
        # boot_id and heartbeat_boot_ns came with schema version 4: NULL on an older file.
        boot_columns = "boot_id, heartbeat_boot_ns" if self._has("writer_lease", "boot_id") else "NULL, NULL"
        # endpoints and public_key came with schema version 8.
        tcp_columns = "endpoints, public_key" if self._has("writer_lease", "public_key") else "NULL, NULL"
        host_id_column = "host_id" if self._has("writer_lease", "host_id") else "NULL"  # schema 9
        found = self._fetch(
            "SELECT pid, process_create_time, host, endpoint, epoch, acquired_at, heartbeat_at,"
            f" released_at, {boot_columns}, {tcp_columns}, {host_id_column} FROM writer_lease WHERE id = 1"
        )
        if not found:
            return None
        pid, ctime, host, endpoint, epoch, acquired, heartbeat, released, boot, boot_ns = found[0][:10]
        endpoints_json, public_key, host_id = found[0][10:]
        alive = released is None and leases.is_alive(pid, ctime, host, boot)
        heartbeat_at = optional_time(heartbeat)
        heartbeat_us = int(heartbeat_at.timestamp() * 1_000_000)
        age_s = leases.silence_s(heartbeat_us, leases.wall_clock_us(), boot, boot_ns)
        return WriterLease(
            pid=pid,
            host=host,
            endpoint=endpoint,
            epoch=epoch,
            since=optional_time(acquired),
            heartbeat=heartbeat_at,
            released=optional_time(released),
            alive=alive,
            boot_id=boot,
            host_id=host_id,
            heartbeat_age_s=round(age_s, 3),
            endpoints=_endpoint_pairs(endpoints_json),
            public_key=public_key,
        )

    def get_counters(self) -> dict[str, int]:
        """The `counters` table as a dict (the writer's published counters are `writer.*`)."""
        if not self._has("counters", "name"):  # a file from before schema version 3
            return {}
        return dict(self._fetch("SELECT name, value FROM counters ORDER BY name"))

    def count_rows(self) -> dict[str, int]:
        """Row counts of the layer's tables that exist in this file."""
        names = [r[0] for r in self._fetch("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: self._fetch(f'SELECT COUNT(*) FROM "{n}"')[0][0] for n in _COUNTED_TABLES if n in names}


def _endpoint_pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    """The lease's `endpoints` column (a JSON array of [pull, pub] pairs); () if absent or malformed."""
    if not text:
        return ()
    try:
        pairs = json.loads(text)
        return tuple((str(pull), str(pub)) for pull, pub in pairs)
    except (ValueError, TypeError):
        return ()
