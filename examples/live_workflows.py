"""Live workflows: a PySide6 window that redraws when, and only when, something it shows changed.

Run it (PySide6 comes with the `gui` extra: `pip install 'see-persistence[gui]'`):

    python examples/live_workflows.py --db /tmp/live-demo/workflows.db

It starts a writer in the background if none runs (`--no-spawn-writer` when a supervisor runs
one). Click "Start a workflow", or record from another terminal (`see-persistence demo --db
...`), and watch the rows change.

How it stays live without a polling timer:

- `reader.watch(kinds=["workflow", "task"])` returns a Watcher whose `fileno()` is readable
  while changes wait. A QSocketNotifier on it wakes the Qt event loop, and `watcher.poll()`
  takes what waits without waiting.
- A `Change` names one record: the window re-reads that row by id and redraws its line only.
- A `Resync` means "re-read what you show" (the first item is always one): the window reloads.

The button records through a `Client` from the GUI thread: its calls return at once, whether
the writer is up, busy or absent, so the window never waits on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSocketNotifier, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QMainWindow,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from see_persistence import Client, Reader, Resync, Status, WorkflowExecution

WORKFLOWS_SHOWN = 50
STEP_INTERVAL_MS = 400  # how fast a started workflow moves along, so that one can watch it
TASK_NAMES = ("fetch", "build", "test")
ID_ROLE = Qt.ItemDataRole.UserRole  # each line keeps its record's id
ORDER_ROLE = Qt.ItemDataRole.UserRole + 1  # and where it sorts: "created_at id", or execution_order


@dataclass
class _Run:
    """A workflow the button started, moved along one step per timer tick."""

    workflow_id: str
    steps: Iterator[None]
    timer: QTimer


def _steps(client: Client, workflow_id: str, task_ids: Sequence[str]) -> Iterator[None]:
    """Each task running, then completed; then the workflow completed: one step per next()."""
    for task_id in task_ids:
        client.update_task_status(task_id, Status.RUNNING)
        yield
        client.append_task_log(task_id, "did its part")
        client.update_task_status(task_id, Status.COMPLETED, output="ok")
        yield
    client.update_workflow_status(workflow_id, Status.COMPLETED)


class LiveWorkflowsWindow(QMainWindow):
    """The newest workflows, each with its tasks, kept live by a Watcher; and a button to start one."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        spawn_writer: bool = True,
        step_interval_ms: int = STEP_INTERVAL_MS,
    ) -> None:
        super().__init__()
        self.reader = Reader(db_path)
        self.setWindowTitle(f"Live workflows: {self.reader.db_path}")
        self.client = Client(db_path, spawn_writer=spawn_writer)
        self.step_interval_ms = step_interval_ms
        self._workflows: dict[str, QTreeWidgetItem] = {}
        self._tasks: dict[str, QTreeWidgetItem] = {}
        self._runs: list[_Run] = []
        self._started = 0
        self._closed = False

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Workflow / task", "Status", "Id"])
        self.tree.setColumnWidth(0, 260)
        self.button = QPushButton("Start a workflow")
        self.button.clicked.connect(self.start_workflow)
        layout = QVBoxLayout()
        layout.addWidget(self.tree)
        layout.addWidget(self.button)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.resize(720, 480)

        # Only workflow and task changes: log lines, audit events and instances are not shown.
        self.watcher = self.reader.watch(kinds=["workflow", "task"])
        self._notifier = QSocketNotifier(self.watcher.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._on_feed_readable)
        # Nothing is read here: the watcher's first item is a Resync, and it draws everything.

    # -- the feed ----------------------------------------------------------------------------

    def _on_feed_readable(self) -> None:
        for item in self.watcher.poll():
            if isinstance(item, Resync):
                self.statusBar().showMessage(f"re-read everything ({item.cause})", 5000)
                self.reload()
            elif item.kind == "workflow":
                self._redraw_workflow(item.id)
            else:
                self._redraw_task(item.id)

    def reload(self) -> None:
        """Re-read and redraw every workflow shown and its tasks (what a Resync asks for)."""
        self.tree.clear()
        self._workflows.clear()
        self._tasks.clear()
        try:
            workflows = self.reader.list_workflows(limit=WORKFLOWS_SHOWN)
        except FileNotFoundError:
            return  # no writer has created the file yet: its first commit brings a Resync
        for workflow in workflows:
            item = self._place_workflow(workflow)
            if item is None:
                continue
            for task in self.reader.get_tasks_for_workflow(workflow.id):
                self._place_task(item, task.id, task.task_name, str(task.status), task.execution_order)

    def _redraw_workflow(self, workflow_id: str) -> None:
        workflow = self.reader.get_workflow(workflow_id)
        item = self._workflows.get(workflow_id)
        if workflow is None:  # pruned, or a dead letter: nothing to show
            if item is not None:
                self._remove_workflow(item)
            return
        if item is None:
            self._place_workflow(workflow)
        else:
            item.setText(0, workflow.workflow_name)
            item.setText(1, str(workflow.status))

    def _redraw_task(self, task_id: str) -> None:
        task = self.reader.get_task(task_id)
        item = self._tasks.get(task_id)
        if task is None:
            if item is not None:
                item.parent().removeChild(item)
                del self._tasks[task_id]
            return
        parent = self._workflows.get(task.workflow_id)
        if parent is None:
            return  # a task of a workflow not shown (older than the newest WORKFLOWS_SHOWN)
        if item is None:
            self._place_task(parent, task_id, task.task_name, str(task.status), task.execution_order)
        else:
            item.setText(0, f"{task.execution_order}. {task.task_name}")
            item.setText(1, str(task.status))

    # -- lines in the tree -------------------------------------------------------------------

    def _place_workflow(self, workflow: WorkflowExecution) -> QTreeWidgetItem | None:
        """Insert a workflow's line where it sorts (newest first); None if it is too old to show."""
        key = f"{workflow.created_at.isoformat()} {workflow.id}"  # UTC throughout: sorts as text
        index = 0
        while index < self.tree.topLevelItemCount():
            if self.tree.topLevelItem(index).data(0, ORDER_ROLE) < key:
                break
            index += 1
        if index >= WORKFLOWS_SHOWN:
            return None
        item = QTreeWidgetItem([workflow.workflow_name, str(workflow.status), workflow.id])
        item.setData(0, ID_ROLE, workflow.id)
        item.setData(0, ORDER_ROLE, key)
        self.tree.insertTopLevelItem(index, item)
        item.setExpanded(True)
        self._workflows[workflow.id] = item
        while self.tree.topLevelItemCount() > WORKFLOWS_SHOWN:
            self._remove_workflow(self.tree.topLevelItem(self.tree.topLevelItemCount() - 1))
        return item

    def _remove_workflow(self, item: QTreeWidgetItem) -> None:
        for index in range(item.childCount()):
            self._tasks.pop(item.child(index).data(0, ID_ROLE), None)
        self._workflows.pop(item.data(0, ID_ROLE), None)
        self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))

    def _place_task(self, parent: QTreeWidgetItem, task_id: str, name: str, status: str, order: int) -> None:
        """Insert a task's line under its workflow, by execution order."""
        index = 0
        while index < parent.childCount() and parent.child(index).data(0, ORDER_ROLE) <= order:
            index += 1
        item = QTreeWidgetItem([f"{order}. {name}", status, task_id])
        item.setData(0, ID_ROLE, task_id)
        item.setData(0, ORDER_ROLE, order)
        parent.insertChild(index, item)
        self._tasks[task_id] = item

    # -- the button --------------------------------------------------------------------------

    def start_workflow(self) -> str:
        """Record a new workflow with a few tasks and move it along on a timer; returns its id."""
        self._started += 1
        name = f"demo-{self._started}"
        workflow_id = self.client.create_workflow(name, metadata={"from": "live_workflows"})
        task_ids = [
            self.client.create_task(workflow_id, name, execution_order=order)
            for order, name in enumerate(TASK_NAMES, start=1)
        ]
        self.client.update_workflow_status(workflow_id, Status.RUNNING)
        timer = QTimer(self)
        timer.setInterval(self.step_interval_ms)
        run = _Run(workflow_id, _steps(self.client, workflow_id, task_ids), timer)
        timer.timeout.connect(lambda: self._advance(run))
        self._runs.append(run)
        timer.start()
        return workflow_id

    def _advance(self, run: _Run) -> None:
        try:
            next(run.steps)
        except StopIteration:
            run.timer.stop()
            run.timer.deleteLater()
            self._runs.remove(run)

    # -- closing -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Cancel the runs still moving, stop watching, close the Client (a bounded flush)."""
        if self._closed:
            return
        self._closed = True
        for run in self._runs:
            run.timer.stop()
            self.client.update_workflow_status(run.workflow_id, Status.CANCELLED, error_message="closed")
        self._runs.clear()
        self._notifier.setEnabled(False)
        self.watcher.close()
        self.client.close()
        self.reader.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Qt calls this when the window closes: release the watcher and the Client."""
        self.shutdown()
        super().closeEvent(event)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, show the window and run the Qt event loop until it closes."""
    parser = argparse.ArgumentParser(description="A live view of see-persistence workflows.")
    parser.add_argument("--db", type=Path, default=None, help="database file (default: the library's)")
    parser.add_argument("--no-spawn-writer", action="store_true", help="do not start a writer when none runs")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = LiveWorkflowsWindow(args.db, spawn_writer=not args.no_spawn_writer)
    window.show()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
