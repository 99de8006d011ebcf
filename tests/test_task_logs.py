"""A task's log: its bounded `logs` column, the side table past it, and what a Reader returns.

Plain calls of protocol/task_logs.py; the writer's own apply_messages on a real file through a
plain sqlite3 connection, one message per transaction as the writer commits them; and real
processes: a writer and a client that logs tens of thousands of lines at full speed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import hello_op

from see_persistence import Reader
from see_persistence.protocol import codec, task_logs
from see_persistence.protocol.task_logs import (
    LOG_COLUMN_MAX_BYTES,
    LOG_CONTINUED,
    LOG_CONTINUED_JSON,
    plan_append,
    whole_log,
)
from see_persistence.reader.rows import json_list
from see_persistence.writer import retention, storage
from see_persistence.writer.batch import BatchResult, SequenceBook, apply_messages

AT_US = 1_780_000_000_000_000
INSTANCE = "0190a0a0-0000-7000-8000-0000000010c5"
WORKFLOW = "0190a0a0-0000-7000-8000-00000000f100"
TASK = "0190a0a0-0000-7000-8000-00000000ta5c"
OTHER_TASK = "0190a0a0-0000-7000-8000-00000000ta5d"
MISSING_TASK = "0190a0a0-0000-7000-8000-00000000dead"
LINE = "x" * 100  # the chatty task: lines of 100 bytes


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


# --- where lines go: protocol/task_logs.py ------------------------------------------------------


def test_the_marker_is_ascii_and_appears_verbatim_in_the_column() -> None:
    assert LOG_CONTINUED.isascii() and json.dumps(LOG_CONTINUED) == f'"{LOG_CONTINUED}"' == LOG_CONTINUED_JSON
    assert task_logs.LOG_LINES_TABLE in LOG_CONTINUED


def test_lines_fill_the_column_up_to_the_bound_then_the_marker_then_spill() -> None:
    bound = 2048
    text: str | None = None
    items: list[str] = []
    for n in range(1000):
        line = f"line {n} " + "y" * (n % 7)
        plan = plan_append(text, [line], bound)
        assert _size(plan.text) <= bound
        if plan.spilled:
            assert list(plan.spilled) == [line]
            assert json.loads(plan.text) == [*items, LOG_CONTINUED]
            assert plan.first_line_no == len(items)
            # the line did not fit beside the marker: the column was full
            assert text is not None
            assert _size(f"{text[:-1]},{json.dumps(line)},{LOG_CONTINUED_JSON}]") > bound
            break
        items.append(line)
        assert json.loads(plan.text) == items
        text = plan.text
    else:
        pytest.fail("never spilled")
    assert len(items) > 50


def test_one_call_with_many_lines_gives_what_one_call_per_line_gives() -> None:
    lines = [f'{n}: ünïcødé ✓ \x00 "quoted" \\ {"z" * (n % 13)}' for n in range(300)]
    together = plan_append('["first"]', lines, 4096)
    text = '["first"]'
    for index, line in enumerate(lines):
        one = plan_append(text, [line], 4096)
        text = one.text
        if one.spilled:
            assert together.text == one.text
            assert list(together.spilled) == lines[index:]
            assert together.first_line_no == one.first_line_no == len(json.loads(text)) - 1
            break
    else:
        pytest.fail("never spilled")
    assert _size(together.text) <= 4096  # bytes, not characters: most of these are not ASCII


def test_a_line_longer_than_the_bound_spills_at_once() -> None:
    plan = plan_append("[]", ["short", "l" * 5000, "after"], 1024)
    assert json.loads(plan.text) == ["short", LOG_CONTINUED]
    assert list(plan.spilled) == ["l" * 5000, "after"] and plan.first_line_no == 1


def test_a_column_already_past_the_bound_gets_the_marker_and_nothing_more() -> None:
    big = json.dumps(["r" * 100] * 50)  # another program's column: 5 KB, bound 1 KB
    plan = plan_append(big, ["mine"], 1024)
    assert json.loads(plan.text) == [*json.loads(big), LOG_CONTINUED]
    assert plan.text.startswith(big[:-1])  # its items are kept byte for byte
    assert list(plan.spilled) == ["mine"] and plan.first_line_no == 50


@pytest.mark.parametrize(
    "text",
    [None, "[]", "[ ]", '[\n  "pretty"\n]\n', "[1,2.50,null]", "[18446744073709551617]", "null", "42",
     '"one line"', '{"a":1}', "not json", "", "[1,"],
)  # fmt: skip
def test_the_column_becomes_what_a_reader_showed_plus_the_lines(text: str | None) -> None:
    plan = plan_append(text, ["a", "b"], LOG_COLUMN_MAX_BYTES)
    assert not plan.spilled
    assert json.loads(plan.text) == [*json_list(text), "a", "b"]
    if text is not None and text.strip().startswith("[") and text.strip().endswith("]"):
        assert plan.text.startswith(text.strip()[:-1])  # spliced: nothing of theirs re-encoded


def test_what_only_python_reads_as_json_is_text() -> None:
    # The Rust core's serde_json refuses NaN and Infinity: to it they are text, not numbers.
    for text in ("NaN", "-Infinity", "[NaN]"):
        assert json.loads(plan_append(text, ["a"]).text) == [text, "a"]


def test_the_whole_log_puts_the_side_lines_where_the_last_marker_is() -> None:
    assert whole_log(["a", LOG_CONTINUED], ["b", "c"]) == ["a", "b", "c"]
    # a line that merely reads like the marker, and one another program appended after it
    assert whole_log([LOG_CONTINUED, "a", LOG_CONTINUED, "z"], ["b"]) == [LOG_CONTINUED, "a", "b", "z"]
    assert whole_log(["a", LOG_CONTINUED], []) == ["a", LOG_CONTINUED]  # nothing spilled
    assert whole_log(["a"], ["b"]) == ["a"]  # no marker: the column stands alone


# --- the writer: apply_messages on a real file --------------------------------------------------


class Applying:
    """The writer's apply_messages on a file, one message per transaction, as the writer does."""

    def __init__(self, path: Path, max_bytes: int = LOG_COLUMN_MAX_BYTES) -> None:
        self.path = path
        self.conn = storage.open_write_connection(path)
        storage.upgrade_schema(self.conn, AT_US)
        self.book = SequenceBook()
        self.seq = 0
        self.max_bytes = max_bytes

    def apply(self, ops: list[tuple[str, dict[str, Any]]]) -> BatchResult:
        self.seq += 1
        raw = codec.encode_message(INSTANCE, self.seq, [hello_op(), *ops] if self.seq == 1 else ops)
        self.conn.execute("BEGIN IMMEDIATE")
        result = apply_messages(
            self.conn, [raw], self.book, now_us=time.time_ns() // 1000, log_column_max_bytes=self.max_bytes
        )
        self.conn.execute("COMMIT")
        self.book.commit(
            result.committed_seq,
            result.rejected_total,
            registered=result.registered,
            dead_letter_bytes=result.dead_letter_bytes,
        )
        return result

    def finish_prunes(self) -> None:
        """Carry out the prune jobs the batches recorded, a chunk per transaction, as the writer does."""
        while (job := retention.unfinished_job(self.conn)) is not None:
            self.conn.execute("BEGIN IMMEDIATE")
            retention.prune_chunk(self.conn, job, time.time_ns() // 1000)
            self.conn.execute("COMMIT")

    def append(self, task_id: str, lines: list[str], per_message: int = 4000) -> None:
        for start in range(0, len(lines), per_message):
            result = self.apply([append(task_id, line) for line in lines[start : start + per_message]])
            assert result.dead_letters == 0

    def column(self, task_id: str = TASK) -> str:
        return str(
            self.conn.execute("SELECT logs FROM task_executions WHERE id = ?", (task_id,)).fetchone()[0]
        )

    def side_lines(self, task_id: str = TASK) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            "SELECT line_no, line FROM task_log_lines WHERE task_id = ? ORDER BY line_no", (task_id,)
        )
        return rows.fetchall()

    def dead_letters(self) -> list[str]:
        return [reason for (reason,) in self.conn.execute("SELECT reason FROM dead_letters ORDER BY id")]


def create(workflow_id: str = WORKFLOW, *task_ids: str) -> list[tuple[str, dict[str, Any]]]:
    ops: list[tuple[str, dict[str, Any]]] = [
        ("create_workflow", {"id": workflow_id, "workflow_name": "w", "metadata": "{}", "at_us": AT_US})
    ]
    for order, task_id in enumerate(task_ids or (TASK,)):
        ops.append(
            (
                "create_task",
                {
                    "id": task_id,
                    "workflow_id": workflow_id,
                    "task_name": "t",
                    "execution_order": order,
                    "at_us": AT_US,
                },
            )
        )
    return ops


def append(task_id: str, line: str) -> tuple[str, dict[str, Any]]:
    return ("append_task_log", {"id": task_id, "line": line, "at_us": AT_US})


@pytest.fixture
def applying(db: Path) -> Iterator[Applying]:
    app = Applying(db, max_bytes=4096)
    app.apply(create(WORKFLOW, TASK, OTHER_TASK))
    yield app
    app.conn.close()


def whole_logs(path: Path, workflow_id: str = WORKFLOW) -> dict[str, list[Any]]:
    with Reader(path) as reader:
        return {task.id: task.logs for task in reader.get_tasks_for_workflow(workflow_id)}


def assert_bounded_array(text: str, bound: int) -> list[str]:
    items = json.loads(text)
    assert _size(text) <= bound and type(items) is list and all(type(i) is str for i in items)
    return items  # type: ignore[no-any-return]


def test_a_long_log_is_column_then_side_table_in_order_and_readers_get_all_of_it(applying: Applying) -> None:
    lines = [f"line {n} {'.' * (n % 50)}" for n in range(3000)]
    for start in range(0, len(lines), 37):  # many batches, each its own transaction
        applying.append(TASK, lines[start : start + 37])
    items = assert_bounded_array(applying.column(), 4096)
    assert items[-1] == LOG_CONTINUED and items[:-1] == lines[: len(items) - 1]
    side = applying.side_lines()
    assert [no for no, _ in side] == list(range(len(items) - 1, len(lines)))  # numbered by place in the log
    assert [line for _, line in side] == lines[len(items) - 1 :]
    assert whole_logs(applying.path) == {TASK: lines, OTHER_TASK: []}
    with Reader(applying.path) as reader:
        task = reader.get_task(TASK)
        assert task is not None and task.logs == lines, "one task by id: its whole log too"


def test_a_run_of_appends_rewrites_each_column_once(applying: Applying) -> None:
    statements: list[str] = []
    applying.conn.set_trace_callback(statements.append)
    ops = [append(TASK if n % 3 else OTHER_TASK, f"line {n}") for n in range(300)]
    assert applying.apply(ops).operations_applied == 300
    applying.conn.set_trace_callback(None)
    rewrites = [s for s in statements if s.startswith("UPDATE task_executions SET logs")]
    assert len(rewrites) == 2  # one per task, not one per line
    logs = whole_logs(applying.path)
    assert logs[TASK] == [f"line {n}" for n in range(300) if n % 3]
    assert logs[OTHER_TASK] == [f"line {n}" for n in range(300) if not n % 3]


def test_appends_between_other_operations_still_rewrite_each_column_once(applying: Applying) -> None:
    statements: list[str] = []
    applying.conn.set_trace_callback(statements.append)
    ops: list[tuple[str, dict[str, Any]]] = []
    for n in range(200):
        task = TASK if n % 2 else OTHER_TASK
        ops.append(append(task, f"line {n}"))
        ops.append(("update_task_status", {"id": task, "status": "running", "at_us": AT_US}))
    assert applying.apply(ops).operations_applied == 400
    applying.conn.set_trace_callback(None)
    assert len([s for s in statements if s.startswith("UPDATE task_executions SET logs")]) == 2
    logs = whole_logs(applying.path)
    assert logs[TASK] == [f"line {n}" for n in range(200) if n % 2]
    assert logs[OTHER_TASK] == [f"line {n}" for n in range(200) if not n % 2]


def test_appends_keep_their_place_around_the_creation_of_their_task_and_a_prune(applying: Applying) -> None:
    late = "0190a0a0-0000-7000-8000-00000000a7e0"
    create_late = create(WORKFLOW, late)[1]
    result = applying.apply([append(late, "before"), create_late, append(late, "after"), append(TASK, "t")])
    assert (result.operations_applied, result.dead_letters) == (3, 1)  # "before": no task yet
    assert applying.dead_letters() == [f"append_task_log: no record with id '{late}'"]
    assert whole_logs(applying.path)[late] == ["after"]
    status = {"id": WORKFLOW, "status": "completed", "error_message": None, "at_us": AT_US}
    prune = {
        "id": "0190a0a0-0000-7000-8000-0000000a0002",
        "older_than_us": AT_US + 1,
        "statuses": ["completed"],
    }
    ops = [
        ("update_workflow_status", status),
        append(TASK, "gone with it"),
        ("prune", {**prune, "at_us": AT_US}),
    ]
    # The prune only records its job in the batch: the append after it still finds its task,
    # and goes with it when the writer carries the job out, after the batch.
    result = applying.apply([*ops, append(TASK, "too late")])
    assert (result.operations_applied, result.dead_letters) == (4, 0)
    applying.finish_prunes()
    assert applying.conn.execute("SELECT COUNT(*) FROM task_executions").fetchone() == (0,)
    assert applying.conn.execute("SELECT COUNT(*) FROM task_log_lines").fetchone() == (0,)


def test_appends_to_a_missing_task_are_dead_letters_one_each_and_the_rest_commit(applying: Applying) -> None:
    ops = [append(TASK, "a"), append(MISSING_TASK, "x"), append(TASK, "b"), append(MISSING_TASK, "y")]
    result = applying.apply(ops)
    assert (result.operations_applied, result.dead_letters) == (2, 2)
    assert applying.dead_letters() == [f"append_task_log: no record with id '{MISSING_TASK}'"] * 2
    raws = [msgpack.unpackb(raw) for (raw,) in applying.conn.execute("SELECT raw FROM dead_letters")]
    assert [payload["line"] for _, payload in raws] == ["x", "y"]  # each its own, in order
    assert whole_logs(applying.path)[TASK] == ["a", "b"]


def test_past_the_bound_the_column_is_never_rewritten(applying: Applying) -> None:
    applying.append(TASK, [LINE] * 100)
    column = applying.column()
    assert json.loads(column)[-1] == LOG_CONTINUED
    before = applying.conn.execute(
        "SELECT last_updated FROM task_executions WHERE id = ?", (TASK,)
    ).fetchone()
    applying.append(TASK, ["later"] * 500)
    assert applying.column() == column
    after = applying.conn.execute("SELECT last_updated FROM task_executions WHERE id = ?", (TASK,)).fetchone()
    assert after > before  # an append still marks the task updated
    assert whole_logs(applying.path)[TASK] == [LINE] * 100 + ["later"] * 500


def test_another_program_appending_to_the_column_keeps_working(applying: Applying) -> None:
    # The seed's way, as the Rust core may still run it, interleaved with the writer's batches.
    rust = "UPDATE task_executions SET logs = json_insert(logs, '$[#]', ?) WHERE id = ?"
    expected: list[str] = []
    for n in range(200):
        applying.append(TASK, [f"ours {n}"])
        applying.conn.execute(rust, (f"theirs {n}", TASK))
        expected += [f"ours {n}", f"theirs {n}"]
    items = json.loads(applying.column())
    # Past the marker their lines still go to the column, ours to the side table: the Reader
    # puts ours where the marker is, theirs after.
    at = items.index(LOG_CONTINUED)
    assert at < len(items) - 1 and all(item.startswith("theirs") for item in items[at + 1 :])
    side = [line for _, line in applying.side_lines()]
    assert whole_logs(applying.path)[TASK] == items[:at] + side + items[at + 1 :]
    assert sorted(items[:at] + side + items[at + 1 :]) == sorted(expected)
    assert items[:at] == expected[:at]


@pytest.mark.parametrize(
    ("stored", "reads_as"),
    [("'not json'", ["not json"]), ("'42'", [42]), ("'null'", []), ("NULL", []), ("''", [""]),
     ("CAST(x'6f6bff' AS TEXT)", ["ok\ufffd"])],
)  # fmt: skip
def test_an_odd_column_becomes_an_array_and_never_fails_the_batch(
    applying: Applying, stored: str, reads_as: list[Any]
) -> None:
    # Before: text that is not JSON failed every batch with an append to it, again and again.
    applying.conn.execute(f"UPDATE task_executions SET logs = {stored} WHERE id = ?", (TASK,))
    result = applying.apply([append(TASK, "a"), append(OTHER_TASK, "b")])
    assert (result.operations_applied, result.dead_letters) == (2, 0)
    assert json.loads(applying.column()) == [*reads_as, "a"]
    assert whole_logs(applying.path) == {TASK: [*reads_as, "a"], OTHER_TASK: ["b"]}


def test_a_line_that_reads_like_the_marker_stays_a_line(applying: Applying) -> None:
    applying.append(TASK, ["a", LOG_CONTINUED, "b"])
    assert applying.side_lines() == []
    assert whole_logs(applying.path)[TASK] == ["a", LOG_CONTINUED, "b"]
    applying.append(TASK, [LINE] * 60)  # then the column fills: the real marker comes last
    assert whole_logs(applying.path)[TASK] == ["a", LOG_CONTINUED, "b", *[LINE] * 60]


def test_lines_left_by_a_column_another_program_reset_are_not_overwritten(applying: Applying) -> None:
    applying.append(TASK, [LINE] * 100)
    old = applying.side_lines()
    applying.conn.execute("UPDATE task_executions SET logs = '[]' WHERE id = ?", (TASK,))
    applying.append(TASK, [f"new {n}" for n in range(300)])
    side = applying.side_lines()
    assert side[: len(old)] == old
    assert [no for no, _ in side] == list(range(old[0][0], old[0][0] + len(side)))  # no collision


def test_a_failing_task_fails_alone_and_the_run_goes_on(applying: Applying) -> None:
    applying.append(TASK, [LINE] * 60)  # spilled: its next lines are rows
    applying.conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON task_log_lines WHEN NEW.line = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    )
    result = applying.apply([append(TASK, "fine"), append(OTHER_TASK, "other"), append(TASK, "boom")])
    assert (result.operations_applied, result.dead_letters) == (1, 2)
    assert applying.dead_letters() == ["append_task_log: refused by a trigger"] * 2
    assert whole_logs(applying.path) == {TASK: [LINE] * 60, OTHER_TASK: ["other"]}


def test_the_whole_log_also_on_the_readers_validated_path(applying: Applying) -> None:
    applying.append(TASK, [f"line {n}" for n in range(500)])
    assert applying.side_lines()
    # chrono's nine digits: the row is not as our writer writes it, and pydantic validates it
    applying.conn.execute(
        "UPDATE task_executions SET created_at = '2026-12-01T07:00:00.123456789+00:00' WHERE id = ?", (TASK,)
    )
    assert whole_logs(applying.path)[TASK] == [f"line {n}" for n in range(500)]


def test_a_pruned_task_takes_its_lines_with_it(applying: Applying) -> None:
    applying.append(TASK, [LINE] * 100)
    assert applying.side_lines()
    status = {"id": WORKFLOW, "status": "completed", "error_message": None, "at_us": AT_US}
    prune = {
        "id": "0190a0a0-0000-7000-8000-0000000a0001",
        "older_than_us": AT_US + 1,
        "statuses": ["completed"],
    }
    result = applying.apply([("update_workflow_status", status), ("prune", {**prune, "at_us": AT_US})])
    assert result.dead_letters == 0
    applying.finish_prunes()  # the writer deletes in chunks after the batch
    assert applying.conn.execute("SELECT COUNT(*) FROM task_executions").fetchone() == (0,)
    assert applying.conn.execute("SELECT COUNT(*) FROM task_log_lines").fetchone() == (0,)


# --- the work per append does not grow with the log ----------------------------------------------


def _cost(app: Applying, line: str) -> tuple[int, int]:
    """(SQLite VM steps, WAL pages written) of one batch that appends `line` to TASK."""
    busy, _, _ = app.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0 and os.path.getsize(f"{app.path}-wal") == 0
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    app.conn.set_progress_handler(count, 1)
    try:
        assert app.apply([append(TASK, line)]).operations_applied == 1
    finally:
        app.conn.set_progress_handler(None, 1)
    page_size = app.conn.execute("PRAGMA page_size").fetchone()[0]
    return steps, (os.path.getsize(f"{app.path}-wal") - 32) // (page_size + 24)


def test_an_append_costs_the_same_at_line_100000_as_just_past_the_bound(db: Path) -> None:
    app = Applying(db)  # the real bound
    app.apply(create())
    app.append(TASK, [LINE] * 599)
    below = _cost(app, LINE)  # the column's last rewrites: 600 lines of 100 bytes, ~60 KB
    app.append(TASK, [LINE] * 399)  # ~630 fill 64 KiB
    assert json.loads(app.column())[-1] == LOG_CONTINUED
    at_1_000 = _cost(app, LINE)
    app.append(TASK, [LINE] * 98_999)
    at_100_000 = _cost(app, LINE)
    assert app.conn.execute("SELECT COUNT(*) FROM task_log_lines").fetchone()[0] > 99_000
    # The same statements, and as many pages: a leaf of the side table, the page of the task
    # row that holds last_updated, the instance's row (its seq). (Measured: 141 steps, 3 pages.)
    assert at_100_000[0] <= at_1_000[0] + 5, (at_1_000, at_100_000)
    assert at_100_000[1] <= at_1_000[1] + 1 and at_100_000[1] <= 6, (at_1_000, at_100_000)
    # Below the bound a batch rewrites the column once: at most its overflow pages, freed and
    # written anew. (Measured: 33 pages at 60 KB.)
    page_size = app.conn.execute("PRAGMA page_size").fetchone()[0]
    assert below[1] <= 2 * LOG_COLUMN_MAX_BYTES // page_size + 4, below
    assert _size(app.column()) <= LOG_COLUMN_MAX_BYTES
    logs = whole_logs(db)[TASK]
    assert len(logs) == 100_000 and logs == [LINE] * 100_000
    app.conn.close()


# --- real processes -----------------------------------------------------------------------------


def test_a_chatty_task_logging_at_full_speed_keeps_the_writer_up(db, writers, clients) -> None:
    writer = writers(db)
    writer.wait_holding_lease()
    lines, chars = 30_000, 100
    report = clients(
        db, "--label", "chatty", "--workflows", "1", "--tasks", "1", "--logs", str(lines),
        "--events", "0", "--line-chars", str(chars), "--flush-timeout", "60",
    ).finish(timeout=80)  # fmt: skip
    assert report["flushed"] is True
    assert writer.process.poll() is None, writer.log()
    [workflow_id] = report["workflow_ids"]
    with Reader(db) as reader:
        [task] = reader.get_tasks_for_workflow(workflow_id)
        expected = [f"chatty-wf-0-task-0-line-{n}".ljust(chars, ".") for n in range(lines)]
        assert task.logs == expected
        [(column,)] = reader.query("SELECT logs FROM task_executions WHERE id = ?", (task.id,))
    items = assert_bounded_array(column, LOG_COLUMN_MAX_BYTES)
    assert items[-1] == LOG_CONTINUED and items[:-1] == expected[: len(items) - 1]
    assert "will retry" not in writer.log()  # no commit failed
