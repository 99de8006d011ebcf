"""The Reader's list views on a file with the real schema: each page comes from an index in
its order (query plans, and the work SQLite does growing with the page, not the table), pages
and their limits, and the dead-letter view."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from see_persistence import Reader
from see_persistence.protocol import codec, schema, timestamps
from see_persistence.protocol.errors import CallerError
from see_persistence.writer.storage import upgrade_schema

pytestmark = pytest.mark.unit

BASE_US = 1_780_000_000_000_000
STATUSES = ("completed", "failed", "running", "cancelled")
INSTANCES = ("i-0", "i-1", "i-2", "i-3")


def make_db(path: Path, workflows: int, *, analyze: bool = False, same_time_every: int = 0) -> Path:
    """A file as our writer leaves it (schema upgrade and all), with `workflows` workflows.

    Workflow i has status STATUSES[i % 4] and instance INSTANCES[(i // 4) % 4], so every
    instance has every status; with `same_time_every` n, each n consecutive workflows share
    one created_at (ties that only the id orders).
    """
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        upgrade_schema(conn, BASE_US)
        rows = []
        for i in range(workflows):
            tick = i // same_time_every if same_time_every else i
            created = timestamps.format_us(BASE_US + tick * 1_000_000)
            rows.append(
                (
                    f"w-{i:07d}",
                    "build",
                    STATUSES[i % 4],
                    created,
                    INSTANCES[(i // 4) % 4],
                    created,
                )
            )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, instance_id,"
            " last_updated) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        if analyze:  # the benchmark's file has statistics; a writer's file has none
            conn.execute("ANALYZE")
    finally:
        conn.close()
    return path


# Each list view as a Reader call, and the index that must serve it (None: the seed's index on
# created_at, which leaves only rows with the same created_at to order by id).
VIEWS: dict[str, tuple[Callable[[Reader], list[Any]], tuple[str, ...]]] = {
    "newest": (lambda r: r.list_workflows(limit=50), ("idx_workflow_executions_created_at",)),
    "by status": (
        lambda r: r.list_workflows(limit=50, status="failed"),
        ("idx_see_workflow_executions_status_created",),
    ),
    "by instance": (
        lambda r: r.list_workflows(limit=50, instance_id="i-1"),
        ("idx_see_workflow_executions_instance_created",),
    ),
    "by status and instance": (
        lambda r: r.list_workflows(limit=50, status="failed", instance_id="i-1"),
        ("idx_see_workflow_executions_instance_status_created",),
    ),
    "of an instance": (
        lambda r: r.get_workflows_for_instance("i-1", limit=50),
        ("idx_see_workflow_executions_instance_created",),
    ),
}


def statements_of(reader: Reader, call: Callable[[Reader], Any]) -> list[str]:
    """The SELECT statements `call` runs on the reader's connection, as SQLite traced them."""
    conn = reader._conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        call(reader)
    finally:
        conn.set_trace_callback(None)
    return [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]


def plan_of(reader: Reader, call: Callable[[Reader], Any]) -> list[str]:
    """EXPLAIN QUERY PLAN of the one SELECT that `call` runs."""
    [sql] = statements_of(reader, call)
    # Python 3.11 traces the statement with its values; 3.10 with its ? (planned alike).
    rows = reader._conn().execute("EXPLAIN QUERY PLAN " + sql, (None,) * sql.count("?")).fetchall()
    return [row[3] for row in rows]


def vm_steps(reader: Reader, call: Callable[[Reader], Any]) -> int:
    """How many virtual-machine instructions SQLite runs for `call`: its work, exactly."""
    conn = reader._conn()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        call(reader)
    finally:
        conn.set_progress_handler(None, 1)
    return steps


@pytest.fixture(scope="module", params=[False, True], ids=["no statistics", "analyzed"])
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    path = make_db(tmp_path_factory.mktemp("views") / "big.db", 20_000, analyze=request.param)
    with Reader(path) as reader:
        yield reader


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    with Reader(make_db(tmp_path_factory.mktemp("views") / "small.db", 2_000)) as reader:
        yield reader


@pytest.mark.parametrize("view", list(VIEWS))
def test_each_list_view_is_read_from_an_index_in_its_order(big: Reader, view: str) -> None:
    call, indexes = VIEWS[view]
    plan = plan_of(big, call)
    assert len(plan) <= 2, plan
    assert plan[0].startswith(
        ("SEARCH workflow_executions USING INDEX", "SCAN workflow_executions USING INDEX")
    )
    assert any(f"USING INDEX {index} " in plan[0] + " " for index in indexes), plan
    assert not any("USE TEMP B-TREE FOR ORDER BY" in step for step in plan), plan
    if len(plan) == 2:
        # Only the unfiltered view: rows that share a created_at are put in id order, and the
        # next test shows that this costs nothing measurable.
        assert view == "newest" and plan[1] == "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY", plan


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_page_costs_the_same_on_ten_times_the_rows(small: Reader, big: Reader, view: str) -> None:
    call, _ = VIEWS[view]
    on_2k, on_20k = vm_steps(small, call), vm_steps(big, call)
    assert len(call(big)) > 0
    # Sorting every match would cost at least one step per matching row: 1,250 to 20,000
    # more on the bigger file. A page read from an index costs the same on both.
    assert on_20k <= on_2k * 1.05 + 50, (on_2k, on_20k)


def test_ties_on_created_at_are_ordered_by_id_and_stay_cheap(tmp_path: Path) -> None:
    # 10 workflows per created_at: the unfiltered view sorts one group of ties at a time.
    with (
        Reader(make_db(tmp_path / "ties-small.db", 2_000, same_time_every=10)) as small,
        Reader(make_db(tmp_path / "ties-big.db", 20_000, same_time_every=10)) as big,
    ):
        for view, (call, _) in VIEWS.items():
            runs = call(big)
            keys = [(w.created_at, w.id) for w in runs]
            assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys), view
            assert vm_steps(big, call) <= vm_steps(small, call) * 1.05 + 50, view
        newest = big.list_workflows(limit=15)
        assert [w.id for w in newest[:10]] == [f"w-{i:07d}" for i in range(19_999, 19_989, -1)]
        assert big.list_workflows(limit=5, offset=10) == newest[10:15]


def test_pages_of_every_list(small: Reader) -> None:
    everything = small.list_workflows(limit=2_000)
    assert [w.id for w in everything] == [f"w-{i:07d}" for i in range(1_999, -1, -1)]
    assert small.list_workflows(limit=10, offset=5) == everything[5:15]
    assert small.list_workflows(limit=0) == []
    assert small.list_workflows(limit=10, offset=1_995) == everything[1_995:]
    mine = [w for w in everything if w.instance_id == "i-2"]
    assert small.get_workflows_for_instance("i-2") == mine[:100]  # its default limit
    assert small.get_workflows_for_instance("i-2", limit=7, offset=3) == mine[3:10]
    assert small.get_workflows_for_instance("i-2", limit=7, offset=3) == small.list_workflows(
        limit=7, offset=3, instance_id="i-2"
    )
    failed = [w for w in mine if w.status == "failed"]
    assert small.list_workflows(limit=1_000, status="failed", instance_id="i-2") == failed


@pytest.fixture
def family(tmp_path: Path) -> Reader:
    """One workflow with 6 tasks and 6 audit events, and 3 instances."""
    path = make_db(tmp_path / "family.db", 1)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        at = [timestamps.format_us(BASE_US + n * 1_000) for n in range(6)]
        conn.executemany(
            "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, execution_order)"
            " VALUES (?, 'w-0000000', ?, 'completed', ?, ?)",
            [(f"t-{n}", f"task {n}", at[n], 6 - n) for n in range(6)],
        )
        conn.executemany(
            "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp)"
            " VALUES (?, 'w-0000000', 'step', 'm', ?)",
            [(f"e-{n}", at[n]) for n in range(6)],
        )
        conn.executemany(
            "INSERT INTO instances (id, started_at, state) VALUES (?, ?, 'ended')",
            [(f"i-{n}", at[n]) for n in range(3)],
        )
    finally:
        conn.close()
    return Reader(path)


def test_tasks_audit_trail_and_instances_are_all_by_default_or_a_page(family: Reader) -> None:
    tasks = family.get_tasks_for_workflow("w-0000000")
    assert [t.id for t in tasks] == [f"t-{n}" for n in range(5, -1, -1)]  # by execution_order
    assert family.get_tasks_for_workflow("w-0000000", limit=2, offset=1) == tasks[1:3]
    assert family.get_tasks_for_workflow("w-0000000", offset=4) == tasks[4:]
    assert family.get_tasks_for_workflow("w-0000000", limit=0) == []
    trail = family.get_audit_trail("w-0000000")
    assert [e.id for e in trail] == [f"e-{n}" for n in range(6)]
    assert family.get_audit_trail("w-0000000", limit=3) == trail[:3]
    assert family.get_audit_trail("w-0000000", limit=3, offset=4) == trail[4:]
    instances = family.get_instances()
    assert [i.id for i in instances] == ["i-2", "i-1", "i-0"]  # most recently started first
    assert family.get_instances(limit=1, offset=1) == instances[1:2]
    assert family.get_instances(offset=3) == []


CALLS_WITH_A_PAGE: dict[str, Callable[..., Any]] = {
    "list_workflows": lambda r, **page: r.list_workflows(**page),
    "get_workflows_for_instance": lambda r, **page: r.get_workflows_for_instance("i-0", **page),
    "get_tasks_for_workflow": lambda r, **page: r.get_tasks_for_workflow("w-0000000", **page),
    "get_audit_trail": lambda r, **page: r.get_audit_trail("w-0000000", **page),
    "get_instances": lambda r, **page: r.get_instances(**page),
    "get_rejections": lambda r, **page: r.get_rejections(**page),
}


@pytest.mark.parametrize("name", list(CALLS_WITH_A_PAGE))
@pytest.mark.parametrize(
    "page",
    [{"limit": -1}, {"offset": -1}, {"limit": 2.0}, {"offset": "3"}, {"limit": True}, {"offset": None}],
    ids=repr,
)
def test_a_limit_or_offset_that_is_not_a_non_negative_int_is_the_callers_error(
    family: Reader, name: str, page: dict[str, Any]
) -> None:
    [(what, value)] = page.items()
    with pytest.raises(CallerError, match=rf"^{what}\b.* must be a non-negative int.*, got {value!r}$"):
        CALLS_WITH_A_PAGE[name](family, **page)


@pytest.mark.parametrize("name", ["get_tasks_for_workflow", "get_audit_trail", "get_instances"])
def test_limit_none_means_every_row(family: Reader, name: str) -> None:
    assert CALLS_WITH_A_PAGE[name](family, limit=None) == CALLS_WITH_A_PAGE[name](family)


def test_every_workflow_of_an_instance_on_request(family: Reader) -> None:
    every = family.get_workflows_for_instance("i-0", limit=None)
    assert every == family.list_workflows(limit=len(every) + 1, instance_id="i-0")
    assert every[:100] == family.get_workflows_for_instance("i-0")


@pytest.mark.parametrize("name", ["list_workflows", "get_rejections"])
def test_views_of_a_growing_table_take_no_limit_none(family: Reader, name: str) -> None:
    with pytest.raises(CallerError, match=r"^limit must be a non-negative int, got None$"):
        CALLS_WITH_A_PAGE[name](family, limit=None)


# -- rejections (dead letters) -------------------------------------------------------------------

# (instance_id, seq, reason, raw) in the order the writer would have stored them.
DEAD_LETTERS: list[tuple[str | None, int | None, str, Any]] = [
    ("i-1", 3, "create_task: FOREIGN KEY constraint failed", codec.encode_operation("create_task", {"a": 1})),
    (None, None, "not msgpack: ...", b"\xc1\xff garbage"),
    ("i-2", 7, "seq must be ...", codec.encode_message("i-2", 7, [("create_workflow", {"n": "x"})])),
    ("i-1", 4, "unknown operation", codec.encode_operation("no_such_op", [1, 2, 3])),
    ("i-1", 5, "name must be a string", msgpack.packb([42, {}])),
    ("i-1", 6, "trailing", codec.encode_operation("create_workflow", {}) + b"\x01"),
    ("i-1", 7, "truncated", codec.encode_operation("create_workflow", {"name": "x"})[:-1]),
    ("i-1", 8, "no bytes", None),
    ("i-1", 9, "text, not bytes", "create_workflow"),
    ("i-1", 10, "bad utf-8", b"\x92\xa2\xff\xfe\x80"),
    ("i-2", 8, "update_workflow_status: no record", codec.encode_operation("update_workflow_status", None)),
]
OPERATIONS = [
    "create_task",
    None,
    None,
    "no_such_op",
    None,
    None,
    None,
    None,
    None,
    None,
    "update_workflow_status",
]


def dead_letter_db(path: Path) -> Path:
    make_db(path, 0)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.executemany(
            "INSERT INTO dead_letters (received_at, instance_id, seq, reason, raw) VALUES (?, ?, ?, ?, ?)",
            [(timestamps.format_us(BASE_US + n), *row) for n, row in enumerate(DEAD_LETTERS)],
        )
    finally:
        conn.close()
    return path


def test_rejections_newest_first_with_the_operation_named_when_its_bytes_say(tmp_path: Path) -> None:
    with Reader(dead_letter_db(tmp_path / "dead.db")) as reader:
        rejections = reader.get_rejections()
        assert [r.id for r in rejections] == list(range(len(DEAD_LETTERS), 0, -1))
        assert [r.operation for r in reversed(rejections)] == OPERATIONS
        for r in rejections:
            instance_id, seq, reason, _ = DEAD_LETTERS[r.id - 1]
            assert (r.instance_id, r.seq, r.reason) == (instance_id, seq, reason)
            assert r.received_at == timestamps.parse(timestamps.format_us(BASE_US + r.id - 1))
        mine = reader.get_rejections("i-1")
        assert mine == [r for r in rejections if r.instance_id == "i-1"] and len(mine) == 8
        assert reader.get_rejections("i-1", limit=2, offset=1) == mine[1:3]
        assert reader.get_rejections(limit=3) == rejections[:3]
        assert reader.get_rejections("nobody") == []
        plan = plan_of(reader, lambda r: r.get_rejections("i-1"))
        assert plan == ["SEARCH dead_letters USING INDEX idx_see_dead_letters_instance (instance_id=?)"]
        assert plan_of(reader, lambda r: r.get_rejections()) == ["SCAN dead_letters"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x92",
        b"\xdd\xff\xff\xff\xff",
        b"\x92\xc1\xc1",
        b"\x91" * 100_000,
        b"\x92\xa1a" + b"\x91" * 100_000 + b"\xc0",
        b"\xc1" * 10,
        bytes(range(256)),
    ],
    ids=[
        "empty",
        "short array",
        "huge array header",
        "reserved bytes",
        "deep nesting",
        "deep payload",
        "c1",
        "all bytes",
    ],
)
def test_odd_bytes_in_a_dead_letter_never_raise(tmp_path: Path, raw: bytes) -> None:
    path = make_db(tmp_path / "odd.db", 0)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute(
        "INSERT INTO dead_letters (received_at, reason, raw) VALUES (?, 'odd', ?)",
        (timestamps.format_us(BASE_US), raw),
    )
    conn.close()
    with Reader(path) as reader:
        [rejection] = reader.get_rejections()
        assert rejection.operation is None and rejection.reason == "odd"


def test_the_schema_holds_the_indexes_these_views_rely_on() -> None:
    # If an index is renamed, the plan tests above fail with names; this says which.
    assert set(schema.LAYER_INDEXES) == {
        "idx_see_workflow_executions_status_created",
        "idx_see_workflow_executions_instance_created",
        "idx_see_workflow_executions_instance_status_created",
        "idx_see_dead_letters_instance",
    }
