"""The Reader's task queries: one task by id, and a workflow's tasks in order, each with its whole log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import task_logs
from . import columns, paging
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import TaskExecution

SQL_TASKS_OF_WORKFLOW = (
    f"SELECT {columns.TASK_COLUMNS} FROM task_executions WHERE workflow_id = ?"
    " ORDER BY execution_order, created_at, id"
)
SQL_TASK = f"SELECT {columns.TASK_COLUMNS} FROM task_executions WHERE id = ?"
# A page; the whole list keeps the SQL above, with no LIMIT to bind.
_SQL_TASKS_OF_WORKFLOW_PAGE = SQL_TASKS_OF_WORKFLOW + paging.PAGE_SQL


class TaskQueries(ReadConnection):
    """Task executions: get_task, get_tasks_for_workflow."""

    def get_task(self, task_id: str) -> TaskExecution | None:
        """The task with this id, its whole log included, or None."""
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        found = self._fetch(SQL_TASK, (task_id,))
        if not found:
            return None
        task = rows.task(found[0])
        logs = found[0][columns.LOGS_COLUMN]
        if type(logs) is str and task_logs.LOG_CONTINUED_JSON in logs:
            task = self._whole_log(task)
        return task

    def get_tasks_for_workflow(
        self, workflow_id: str, limit: int | None = None, offset: int = 0
    ) -> list[TaskExecution]:
        """The tasks of a workflow by execution_order, then created_at: all (limit None) or a page.

        Each task's `logs` is its whole log, `task_log_lines` included (protocol/task_logs.py).
        """
        from . import rows  # here: the models load on a Reader's first record (columns.py)

        if paging.whole(limit, offset):
            found = self._fetch(SQL_TASKS_OF_WORKFLOW, (workflow_id,))
        else:
            found = self._fetch(_SQL_TASKS_OF_WORKFLOW_PAGE, (workflow_id, *paging.page(limit, offset)))
        tasks = rows.tasks(found)
        for index, row in enumerate(found):
            # A full column says where the rest of its log is: only then is the side table read.
            logs = row[columns.LOGS_COLUMN]
            if type(logs) is str and task_logs.LOG_CONTINUED_JSON in logs:
                tasks[index] = self._whole_log(tasks[index])
        return tasks

    def _whole_log(self, task: TaskExecution) -> TaskExecution:
        """`task` with the lines its `logs` column could not hold (protocol/task_logs.py) in place."""
        if task_logs.continued_at(task.logs) is None or not self._has(task_logs.LOG_LINES_TABLE, "task_id"):
            return task
        # Read after the row, in a statement of its own: lines committed in between come too.
        # The log only ever grows at its end, so this is the log as of a moment later.
        lines = [line for (line,) in self._fetch(task_logs.SELECT_LINES, (task.id,))]
        if not lines:
            return task  # a line that reads like the marker, and nothing spilled
        return task.model_copy(update={"logs": task_logs.whole_log(task.logs, lines)})
