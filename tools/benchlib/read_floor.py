"""The least that models add to a read, beside what plain rows and the Reader's models add.

The floor of a query is what any pydantic model path adds at the very least: each row turned
into a dict (`dict(zip(columns, row))`, the cheapest input a model validates from) and one
model per row with a field of type `Any` per column (no parsing, no checks), validated from
those dicts in one call. A Reader query that builds its models through pydantic's public API
costs at least the read plus that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .formatting import fmt_ns, fmt_ratio, markdown_table

if TYPE_CHECKING:
    from see_persistence import Reader

PAGE_ROWS = 50

TimePair = Callable[
    [Callable[[Any], Sequence[Any]], Callable[[Any], Sequence[Any]], Sequence[Any], float],
    tuple[float, float, float, int],
]


@dataclass
class FloorFigure:
    """One way to read a query's rows, timed alternately with the same SQL through raw sqlite3."""

    name: str
    ns: float
    raw_ns: float


def _bare_list(name: str, columns: Sequence[str]) -> Any:
    """A TypeAdapter of a list of models with one field of type Any per column."""
    from pydantic import TypeAdapter, create_model

    bare = create_model(name, **{column: (Any, ...) for column in columns})  # type: ignore[call-overload]
    return TypeAdapter(list[bare])  # type: ignore[valid-type]


def measure_floors(
    reader: Reader,
    raw_fetch: Callable[[str, Sequence[Any]], list[Any]],
    time_pair: TimePair,
    workflow_ids: Sequence[str],
    budget_s: float,
) -> list[FloorFigure]:
    """The floors of a 50-row page, of a workflow's tasks and of its audit trail; and plain rows."""
    from see_persistence.reader import audit, rows, tasks, workflows

    def floor_of(sql: str, columns: Sequence[str], name: str) -> Callable[[Any], Sequence[Any]]:
        adapter = _bare_list(name, columns)
        return lambda params: adapter.validate_python(
            [dict(zip(columns, row, strict=False)) for row in raw_fetch(sql, params)]
        )

    newest = workflows.SQL_NEWEST_WORKFLOWS[False, False]
    page = [(PAGE_ROWS, 0)]
    of_workflow = [(wid,) for wid in workflow_ids]
    cases: list[tuple[str, Callable[[Any], Sequence[Any]], str, Sequence[Any]]] = [
        (
            "list_workflow_rows(limit=50): plain tuples",
            lambda _: reader.list_workflow_rows(PAGE_ROWS),
            newest,
            page,
        ),
        (
            "list_workflows(limit=50)'s floor",
            floor_of(newest, rows.WORKFLOW_FIELDS, "BareWorkflow"),
            newest,
            page,
        ),
        (
            "get_tasks_for_workflow(id)'s floor",
            floor_of(tasks.SQL_TASKS_OF_WORKFLOW, rows.TASK_FIELDS, "BareTask"),
            tasks.SQL_TASKS_OF_WORKFLOW,
            of_workflow,
        ),
        (
            "get_audit_trail(id)'s floor",
            floor_of(audit.SQL_AUDIT_TRAIL, rows.AUDIT_FIELDS, "BareAuditEvent"),
            audit.SQL_AUDIT_TRAIL,
            of_workflow,
        ),
    ]
    out = []
    for name, ours, sql, args in cases:
        ours_ns, raw_ns, _rows, _calls = time_pair(
            ours, lambda params, sql=sql: raw_fetch(sql, params), args, budget_s
        )
        out.append(FloorFigure(name, ours_ns, raw_ns))
    return out


def floor_lines(figures: list[FloorFigure]) -> list[str]:
    """The floors table, each figure beside the raw read timed with it."""
    if not figures:
        return []
    out = [
        "### The least that models add",
        "",
        "A query's floor: the same SQL through sqlite3, then `dict(zip(columns, row))` per row and"
        " one model per row with a field of type `Any` per column, validated from those dicts in"
        " one call (tools/benchlib/read_floor.py): the least that building models through"
        " pydantic's public API adds to the read. Each timed alternately with the raw read.",
        "",
    ]
    rows = [[f.name, fmt_ns(f.ns), fmt_ns(f.raw_ns), fmt_ratio(f.ns, f.raw_ns)] for f in figures]
    out += markdown_table(["query", "per call", "raw sqlite3", "ratio"], rows)
    return out
