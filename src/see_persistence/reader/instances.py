"""The Reader's instance queries: registered GUI instances, the live ones, and counts per instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import paging
from .columns import optional_time
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import Instance, InstanceStats

_INSTANCE_COLUMNS = "id, pid, process_create_time, host, started_at, last_seen, ended_at, state, last_seq"
# `rejected` and `boot_id` came with schema version 4, `host_id`, `last_heard_at` and
# `clock_skew_us` with 9; on an older file a literal 0 and NULLs stand in for them, so every
# instance row has the same shape. Keyed by (has rejected, has boot_id, has host_id).
_INSTANCE_SELECT = {
    (rejected, boot, hosts): f"SELECT {_INSTANCE_COLUMNS}, {'rejected' if rejected else '0'},"
    f" {'boot_id' if boot else 'NULL'},"
    f" {'host_id, last_heard_at, clock_skew_us' if hosts else 'NULL, NULL, NULL'} FROM instances"
    for rejected in (True, False)
    for boot in (True, False)
    for hosts in (True, False)
}
_SQL_INSTANCES_PAGE = " ORDER BY started_at DESC" + paging.PAGE_SQL


def _instance(row: tuple[Any, ...]) -> Instance:
    from ..protocol.models import Instance  # here: the models load on a Reader's first record (columns.py)

    return Instance(
        id=row[0],
        pid=row[1],
        process_create_time=row[2],
        host=row[3],
        started_at=optional_time(row[4]),
        last_seen=optional_time(row[5]),
        ended_at=optional_time(row[6]),
        state=row[7],
        last_seq=row[8] or 0,
        rejected=row[9] or 0,
        boot_id=row[10],
        host_id=row[11],
        last_heard_at=optional_time(row[12]),
        clock_skew_us=row[13],
    )


def is_running(row: tuple[Any, ...]) -> bool:
    """Whether the instance of a live-registered row runs: by its pid on this host, else the writer's word.

    An instance on another host (another leases.host_id) cannot be checked from here: it is
    live while the writer hears from it, and the writer marks it dead when it falls silent.
    """
    from .. import leases  # here: psutil loads with the first liveness check, not with the Reader

    if leases.is_local(row[11]):
        return leases.is_alive(row[1], row[2], row[3], row[10])
    return True


class InstanceQueries(ReadConnection):
    """GUI instances: get_instances, get_instance, get_active_instances, get_instance_stats.

    And instance_progress: what a Client checks its confirmations against, without the models.
    """

    def _instances(self, where: str = "", params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of `instances` (with `rejected`, 0 if the file has none); [] if it has no such table."""
        if not self._has("instances"):
            return []
        rejected = self._has("instances", "rejected")
        # boot_id comes with rejected, in one upgrade: the table_info read that found (or is
        # still looking for) `rejected` lists it too. A lookup of its own would repeat on every
        # call on a file stamped 4 before boot_id joined that version; such a file reads NULL
        # (the host-name rule) until the connection is opened again.
        boot = self._seen("instances", "boot_id")
        hosts = self._seen("instances", "host_id")  # likewise, with schema 9
        return self._fetch(_INSTANCE_SELECT[rejected, boot, hosts] + where, params)

    def get_instances(self, limit: int | None = None, offset: int = 0) -> list[Instance]:
        """Registered instances, live, ended or dead, most recently started first: all or a page.

        Empty on a file without `instances` (made by the Rust core, before any writer of ours).
        """
        page = paging.page(limit, offset)
        return [_instance(r) for r in self._instances(_SQL_INSTANCES_PAGE, page)]

    def get_instance(self, instance_id: str) -> Instance | None:
        """The registered instance with this id, or None."""
        found = self._instances(" WHERE id = ?", (instance_id,))
        return _instance(found[0]) if found else None

    def instance_progress(self, instance_id: str) -> tuple[int, int] | None:
        """(last committed seq, operations rejected) of this instance, or None; read without the models."""
        found = self._instances(" WHERE id = ?", (instance_id,))
        return (found[0][8] or 0, found[0][9] or 0) if found else None

    def get_active_instances(self) -> list[Instance]:
        """Instances registered live whose process still runs (pid, create time and boot checked);
        on another host, those the writer has not found silent (see `is_running`)."""
        found = self._instances(" WHERE state = 'live' ORDER BY started_at")
        return [_instance(r) for r in found if is_running(r)]

    def get_instance_stats(self) -> InstanceStats:
        """Total workflows, live instances, and how many workflows each live instance has."""
        from ..protocol.models import InstanceStats  # here: see _instance

        total = self._fetch("SELECT COUNT(*) FROM workflow_executions")[0][0]
        active = self.get_active_instances()
        per_instance: dict[str, int] = {}
        for instance in active:
            per_instance[instance.id] = self._fetch(
                "SELECT COUNT(*) FROM workflow_executions WHERE instance_id = ?", (instance.id,)
            )[0][0]
        return InstanceStats(
            total_workflows=total, active_instances=len(active), workflows_per_instance=per_instance
        )
