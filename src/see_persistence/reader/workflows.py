"""The Reader's workflow queries: one by id, pages newest first, and the same pages as plain rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol.status import Status
from . import columns, paging
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import WorkflowExecution

SQL_WORKFLOW = f"SELECT {columns.WORKFLOW_COLUMNS} FROM workflow_executions WHERE id = ?"
# Newest first. Each filter has an index that yields its rows already in this order (schema
# version 4: (status, created_at, id) and (instance_id, created_at, id)), so SQLite reads 50
# entries for 50 rows instead of sorting every match; tests/test_reader_views.py checks the
# plans. Unfiltered, the seed's index on created_at gives the order and SQLite sorts only
# rows that share a created_at by id ("RIGHT PART OF ORDER BY"), a few at most. With both
# filters it walks the instance's index and skips rows of other statuses: a status the
# instance has few of costs a read of the instance's rows (no index has both columns).
_NEWEST = (
    f"SELECT {columns.WORKFLOW_COLUMNS} FROM workflow_executions{{}} ORDER BY created_at DESC, id DESC"
    + paging.PAGE_SQL
)
# list_workflows' SQL by (filters on status, filters on instance_id).
SQL_NEWEST_WORKFLOWS: dict[tuple[bool, bool], str] = {
    (False, False): _NEWEST.format(""),
    (True, False): _NEWEST.format(" WHERE status = ?"),
    (False, True): _NEWEST.format(" WHERE instance_id = ?"),
    (True, True): _NEWEST.format(" WHERE status = ? AND instance_id = ?"),
}
SQL_WORKFLOWS_OF_INSTANCE = SQL_NEWEST_WORKFLOWS[False, True]


class WorkflowQueries(ReadConnection):
    """Workflow executions: get_workflow, list_workflows, get_workflows_for_instance, list_workflow_rows."""

    WORKFLOW_ROW_COLUMNS: tuple[str, ...] = columns.WORKFLOW_FIELDS
    """The columns of list_workflow_rows' tuples, in order (WorkflowExecution's fields)."""

    def get_workflow(self, workflow_id: str) -> WorkflowExecution | None:
        """The workflow with this id, or None."""
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        found = self._fetch(SQL_WORKFLOW, (workflow_id,))
        return rows.workflow(found[0]) if found else None

    def list_workflows(
        self,
        limit: int = 100,
        offset: int = 0,
        status: Status | str | None = None,
        instance_id: str | None = None,
    ) -> list[WorkflowExecution]:
        """At most `limit` workflows after the newest `offset`, newest first (created_at, then id).

        Optionally only those with `status`, or from `instance_id`, or both. `limit` and
        `offset` are non-negative ints (else CallerError). Each page is read from an index in
        this order, so its cost grows with limit + offset, not with the table.
        """
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        return rows.workflows(self.list_workflow_rows(limit, offset, status, instance_id))

    def list_workflow_rows(
        self,
        limit: int = 100,
        offset: int = 0,
        status: Status | str | None = None,
        instance_id: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """list_workflows' page as the file holds it: plain tuples, for scans of many rows.

        Each tuple has WORKFLOW_ROW_COLUMNS in order, unparsed: timestamps are RFC 3339 text,
        `status` lowercase text, `success` 0, 1 or None, `metadata` JSON text or None. Building
        models costs more than reading the rows (see docs/BENCHMARKS.md); this costs what the
        same SQL through sqlite3 does. Arguments, order and checks are list_workflows'.
        """
        params: list[Any] = []
        if status is not None:
            params.append(Status.parse(status).value)
        if instance_id is not None:
            params.append(instance_id)
        params.append(paging.count(limit, "limit"))
        params.append(paging.count(offset, "offset"))
        return self._fetch(SQL_NEWEST_WORKFLOWS[status is not None, instance_id is not None], params)

    def get_workflows_for_instance(
        self, instance_id: str, limit: int | None = 100, offset: int = 0
    ) -> list[WorkflowExecution]:
        """The workflows one instance created, newest first, a page of `limit` (None: all)."""
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        params = (instance_id, *paging.page(limit, offset))
        return rows.workflows(self._fetch(SQL_WORKFLOWS_OF_INSTANCE, params))
