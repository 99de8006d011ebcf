"""What each writer commit changed, for the change feed: gathered from the prepared batch, no SQL.

The writer says before each transaction what it will change (`describe_batch`, `nothing`,
or, by default, "not described": an OVERFLOW notice, so a watcher re-reads rather than miss
a sweep's or a prune's changes), and publishes one notice per COMMIT (protocol/feed.py).
"""

from __future__ import annotations

from ..protocol import feed, statements
from ..protocol.operations import APPEND_TASK_LOG
from .batch import DeadLetter, Logs, PreparedBatch, Run

# Statement -> where its record is in the bound parameters; looked up once per run of it.
_SPECS: dict[int, feed.RecordSpec | None] = {}


def _spec(statement: statements.Statement, operation: str) -> feed.RecordSpec | None:
    key = id(statement)  # the compiled statements live for the process: their ids stay theirs
    try:
        return _SPECS[key]
    except KeyError:
        spec = _SPECS[key] = feed.record_spec(operation, statement.names)
        return spec


_LOG_SPEC = feed.record_spec(APPEND_TASK_LOG, statements.COMPILED[(APPEND_TASK_LOG, None)].names)


def describe_batch(prepared: PreparedBatch, workflow_of_task: dict[str, str]) -> feed.Coalescer:
    """The records `prepared` changes, coalesced; `workflow_of_task` is learned from and filled in.

    Per operation it costs a few lookups until the notice is full (MAX_RECORDS); past that,
    whole runs are taken at once: only the workflows they name, or nothing but a count.
    """
    gathered = feed.Coalescer()
    add = gathered.add
    task = feed.Kind.TASK
    for step in prepared.steps:
        kind = type(step)
        if kind is Run:
            assert isinstance(step, Run)
            ops = step.operations
            spec = _spec(step.statement, ops[0].name)
            if spec is None:
                continue
        elif kind is Logs:
            assert isinstance(step, Logs) and _LOG_SPEC is not None
            ops, spec = step.operations, _LOG_SPEC
        elif kind is DeadLetter:
            continue
        else:
            gathered.overflow_unknown()  # a prune: its chunks delete what no notice lists
            continue
        if gathered.overflow:
            index = spec.workflow_index
            ids = None if index is None else (op.params[index] for op in ops)  # read only if still wanted
            gathered.add_past_cap(len(ops), ids)
            continue
        record = spec.record
        for op in ops:
            record_kind, record_id, workflow_id, status = record(op.params)
            if workflow_id is None:
                if spec.workflow_index is None:
                    workflow_id = workflow_of_task.get(record_id)
            elif record_kind is task:
                if len(workflow_of_task) >= TASK_WORKFLOWS_KEPT:
                    workflow_of_task.clear()  # a cache: a task it forgot is announced without its workflow
                workflow_of_task[record_id] = workflow_id
            add(record_kind, record_id, workflow_id, status)
    return gathered


# How many tasks' workflows the writer remembers (from their create_task) to name the workflow
# of a status change or a log line; a watcher looks up the ones it is not told.
TASK_WORKFLOWS_KEPT = 100_000
