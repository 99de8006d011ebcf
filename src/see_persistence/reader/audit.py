"""The Reader's audit queries: one event by id, and a workflow's trail in time order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import columns, paging
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import AuditEvent

SQL_AUDIT_EVENT = f"SELECT {columns.AUDIT_COLUMNS} FROM audit_events WHERE id = ?"
SQL_AUDIT_TRAIL = (
    f"SELECT {columns.AUDIT_COLUMNS} FROM audit_events WHERE workflow_id = ? ORDER BY timestamp, id"
)
# A page; the whole trail keeps the SQL above, with no LIMIT to bind.
_SQL_AUDIT_TRAIL_PAGE = SQL_AUDIT_TRAIL + paging.PAGE_SQL


class AuditQueries(ReadConnection):
    """Audit events: get_audit_event, get_audit_trail."""

    def get_audit_event(self, event_id: str) -> AuditEvent | None:
        """The audit event with this id, or None."""
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        found = self._fetch(SQL_AUDIT_EVENT, (event_id,))
        return rows.audit(found[0]) if found else None

    def get_audit_trail(
        self, workflow_id: str, limit: int | None = None, offset: int = 0
    ) -> list[AuditEvent]:
        """The audit events of a workflow by timestamp, then id: all (limit None) or a page."""
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        if paging.whole(limit, offset):
            return rows.audits(self._fetch(SQL_AUDIT_TRAIL, (workflow_id,)))
        return rows.audits(self._fetch(_SQL_AUDIT_TRAIL_PAGE, (workflow_id, *paging.page(limit, offset))))
