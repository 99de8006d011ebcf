"""The baseline: the seed's design, every GUI process committing each operation in its own transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .databases import create_schema, measure_disk, remove_db
from .figures import Cell
from .phases import paced_phase, run_gui_phase, start_guis
from .processes import Children
from .settings import Settings
from .system import System
from .workloads import json_text, uuid4_text

NAIVE_BUSY_TIMEOUT_S = 30.0


def open_naive_connection(db: Path) -> sqlite3.Connection:
    """A connection of the seed's design: WAL, synchronous=NORMAL, busy_timeout 30 s, autocommit."""
    conn = sqlite3.connect(
        str(db), isolation_level=None, timeout=NAIVE_BUSY_TIMEOUT_S, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(NAIVE_BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class CommitsEachCall:
    """What a GUI of the naive design reports to the bench: every call committed as it returned.

    A subclass opens `conn` (sqlite3 or psycopg, in autocommit) and makes the write calls.
    """

    conn: Any

    def backlog(self) -> int:
        """Nothing waits: every call committed before it returned."""
        return 0

    def committed(self, done: int) -> int:
        """Every operation done is committed."""
        return done

    def dropped(self) -> int:
        """The naive design never drops (it blocks instead)."""
        return 0

    def messages(self, done: int) -> int:
        """One transaction per operation."""
        return done

    def flush(self, timeout: float) -> bool:
        """Nothing to flush."""
        return True

    def close(self, timeout: float) -> bool:
        """Close the connection."""
        self.conn.close()
        return True


class NaiveGui(CommitsEachCall):
    """The seed's design: the GUI runs the writer's own statements, one transaction per operation."""

    def __init__(self, db: Path, ids: str) -> None:
        from see_persistence.idgen import new_id
        from see_persistence.protocol import operations as ops
        from see_persistence.protocol import statements
        from see_persistence.protocol.timestamps import format_us

        self.conn = open_naive_connection(db)
        self.instance_id = new_id()
        self._new_id: Callable[[], str] = new_id if ids == "same" else uuid4_text
        self._format_us = format_us
        self._insert_workflow = statements.INSERTS[ops.CREATE_WORKFLOW]
        self._insert_task = statements.INSERTS[ops.CREATE_TASK]
        self._append_log = statements.INSERTS[ops.APPEND_TASK_LOG]
        self._insert_event = statements.INSERTS[ops.AUDIT_EVENT]
        self._workflow_updates = statements.WORKFLOW_STATUS_UPDATES
        self._task_updates = statements.TASK_STATUS_UPDATES

    def _at(self) -> str:
        return self._format_us(time.time_ns() // 1000)

    def create_workflow(self, name: str, metadata: dict[str, Any] | None = None) -> str:
        """INSERT a pending workflow (its own transaction)."""
        record_id, at = self._new_id(), self._at()
        self.conn.execute(
            self._insert_workflow,
            {
                "id": record_id,
                "workflow_name": name,
                "metadata": json_text(metadata),
                "instance_id": self.instance_id,
                "at": at,
                "now": at,
            },
        )
        return record_id

    def update_workflow_status(
        self, workflow_id: str, status: str, *, error_message: str | None = None
    ) -> None:
        """UPDATE a workflow's status by id."""
        at = self._at()
        self.conn.execute(
            self._workflow_updates[status],
            {"id": workflow_id, "status": status, "error_message": error_message, "at": at, "now": at},
        )

    def create_task(self, workflow_id: str, name: str, execution_order: int = 0) -> str:
        """INSERT a pending task."""
        record_id, at = self._new_id(), self._at()
        self.conn.execute(
            self._insert_task,
            {
                "id": record_id,
                "workflow_id": workflow_id,
                "task_name": name,
                "execution_order": execution_order,
                "instance_id": self.instance_id,
                "at": at,
                "now": at,
            },
        )
        return record_id

    def update_task_status(
        self, task_id: str, status: str, *, output: str | None = None, error_message: str | None = None
    ) -> None:
        """UPDATE a task's status (and output) by id."""
        at = self._at()
        self.conn.execute(
            self._task_updates[status],
            {
                "id": task_id,
                "status": status,
                "output": output,
                "error_message": error_message,
                "at": at,
                "now": at,
            },
        )

    def append_task_log(self, task_id: str, line: str) -> None:
        """UPDATE a task's logs with one more line."""
        self.conn.execute(self._append_log, {"id": task_id, "line": line, "now": self._at()})

    def log_audit_event(
        self,
        event_type: str,
        message: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """INSERT an audit event."""
        record_id = self._new_id()
        self.conn.execute(
            self._insert_event,
            {
                "id": record_id,
                "workflow_id": workflow_id,
                "task_id": task_id,
                "event_type": event_type,
                "message": message,
                "data": json_text(data),
                "instance_id": self.instance_id,
                "at": self._at(),
            },
        )
        return record_id


def run_naive_group(settings: Settings, workload: str, procs: int, system: str) -> Cell:
    """The seed's design: P GUI processes committing each operation themselves."""
    cell = Cell(system, workload, procs)
    cell_dir = settings.workdir / f"{workload}-{system}-{procs}"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    create_schema(db)
    group = Children()
    try:
        start_guis(group, cell_dir, system, db, workload, procs)
        cell.flood, _ = run_gui_phase(group, cell_dir, "flood", "flood", settings.seconds, settings.warmup)
        if system == "naive-same" and cell.flood.rate > 0:
            cell.paced, cell.visible, _ = paced_phase(
                settings, group, cell_dir, db, cell, procs, 0.5, "paced"
            )
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
    finally:
        group.close()
    measure_disk(cell, db, raw=False)
    remove_db(db)
    return cell


SYSTEMS = (
    System(
        "naive-same",
        "naive, same ids",
        lambda db: NaiveGui(db, "same"),
        lambda settings, workload, procs: run_naive_group(settings, workload, procs, "naive-same"),
    ),
    System(
        "naive-uuid4",
        "naive, uuid4 ids",
        lambda db: NaiveGui(db, "uuid4"),
        lambda settings, workload, procs: run_naive_group(settings, workload, procs, "naive-uuid4"),
    ),
)
