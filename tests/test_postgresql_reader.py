# ruff: noqa: E501  (the rows below read best one to a line)
"""The Reader on a real PostgreSQL server: the same rows in both backends read back as equal models.

Each test fills an SQLite file (as the writer lays it out) and a PostgreSQL database (the schema
of protocol/schema_postgresql.py) with the same rows, spelled as each backend stores them, and
compares what the two Readers return, field by field. Then what only PostgreSQL has: the pool,
read-only transactions and what query() refuses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import wait_until
from pydantic import BaseModel

from see_persistence import Reader, Resync, ResyncCause
from see_persistence.leases import current_process
from see_persistence.protocol import schema, schema_postgresql, task_logs
from see_persistence.protocol.errors import ReadOnlyViolation
from see_persistence.protocol.timestamps import format_us
from see_persistence.reader.postgresql_sql import (
    count_qmarks,
    qmark_to_psycopg,
    rfc3339_text,
    sqlite_null_order,
    user_statement,
)

psycopg = pytest.importorskip("psycopg")

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def at(seconds: float) -> str:
    """An instant BASE + seconds as the writer stores it."""
    return format_us(BASE_US + round(seconds * 1_000_000))


ME = current_process()
INSTANCE_A = "0190a000-0000-7000-8000-00000000000a"
INSTANCE_B = "0190a000-0000-7000-8000-00000000000b"

# (id, name, status, created, started, completed, success, error, metadata, instance, last_updated)
WORKFLOWS: list[tuple[Any, ...]] = [
    ("w01", "build", "completed", at(1), at(1.5), at(9), 1, None, '{"branch":"main","n":1}', INSTANCE_A, at(9)),
    ("w02", "build", "failed", at(2), at(2.000001), at(3), 0, "tests failed", None, INSTANCE_A, at(3)),
    ("w03", "deploy", "running", at(3), at(3.5), None, None, None, "{}", INSTANCE_B, at(3.5)),
    ("w04", "deploy", "pending", at(4), None, None, None, None, '{"ü":[1,2.5,null,true],"z":{"a":"b"}}', None, None),
    ("w05", "lint", "cancelled", at(5), at(5), at(6), None, None, "[1,2]", INSTANCE_B, at(6)),
    ("w06", "lint", "completed", at(5), at(5.25), at(7), 1, None, '"just text"', INSTANCE_A, at(7)),  # same created_at
    ("w07", "nightly", "completed", at(7), at(7.1), at(8), 1, None, "null", INSTANCE_A, at(8)),
    ("w08", "nightly", "failed", at(8), at(8.1), at(8.2), 0, "boom\nline 2", '{"big":12345678901234567}', INSTANCE_B, at(8.2)),
    ("w09", "x" * 200, "completed", at(9), at(9), at(9), 1, "", '{"emoji":"🚀","quote":"\\"q\\""}', INSTANCE_A, at(9)),
    ("w10", "nightly", "running", at(10.5), at(10.75), None, None, None, '{"n":10}', INSTANCE_A, at(10.75)),
]  # fmt: skip
# (id, workflow, name, status, created, started, completed, success, error, output, logs, retries,
#  order, instance, last_updated)
TASKS: list[tuple[Any, ...]] = [
    ("t01", "w01", "compile", "completed", at(1.1), at(1.2), at(2), 1, None, "ok", '["gcc -O2","done"]', 0, 1, INSTANCE_A, at(2)),
    ("t02", "w01", "test", "failed", at(1.2), at(2), at(3), 0, "2 failed", None, "[]", 2, 2, INSTANCE_A, at(3)),
    ("t03", "w01", "package", "pending", at(1.3), None, None, None, None, None, None, None, None, INSTANCE_A, None),
    ("t04", "w01", "upload", "running", at(1.05), at(4), None, None, None, None, '["a", 1, null]', 0, 2, INSTANCE_A, at(4)),
    ("t05", "w01", "chatty", "completed", at(1.4), at(1.5), at(5), 1, None, None,
     json.dumps(["first", task_logs.LOG_CONTINUED]), 0, 3, INSTANCE_A, at(5)),
    ("t06", "w02", "compile", "completed", at(2.1), at(2.2), at(2.5), 1, None, "ok", '["ok"]', 0, 1, INSTANCE_A, at(2.5)),
]  # fmt: skip
LOG_LINES = [("t05", 1, "second"), ("t05", 2, "third — ü")]
# (id, workflow, task, type, message, timestamp, data, instance)
EVENTS: list[tuple[Any, ...]] = [
    ("e01", "w01", None, "workflow_started", "started", at(1.5), "{}", INSTANCE_A),
    ("e02", "w01", "t01", "task_completed", "compiled", at(2), '{"files":3}', INSTANCE_A),
    ("e03", "w01", None, "note", "same instant", at(2), None, None),
    ("e04", "w01", None, "workflow_completed", "done", at(9), '{"n":1,"list":[1,"x"]}', INSTANCE_A),
    ("e05", "w02", None, "workflow_failed", "failed", at(3), '{"error":"tests failed"}', INSTANCE_A),
]
# (id, pid, create time, host, started, last seen, ended, state, last seq, rejected, boot id)
INSTANCES: list[tuple[Any, ...]] = [
    (INSTANCE_A, ME.pid, ME.create_time, ME.host, at(0.5), at(10), None, "live", 42, 1, ME.boot_id),
    (INSTANCE_B, 999_999_999, 1.5, ME.host, at(0.25), at(6), at(6.5), "ended", 7, 0, ME.boot_id),
    ("0190a000-0000-7000-8000-00000000000c", None, None, None, None, None, None, "live", 0, None, None),
]
DEAD_LETTERS: list[tuple[Any, ...]] = [
    (1, at(3), INSTANCE_A, 5, "unknown status 'done'", msgpack.packb(["update_task_status", {"id": "t1"}])),
    (2, at(4), None, None, "not msgpack", b"\xc1\xff"),
]
LEASE = (1, ME.pid, ME.create_time, ME.host, "ipc:///tmp/x", 3, at(0), at(10), None, ME.boot_id, 123, 17, 99,
         '[["tcp://127.0.0.1:5000","tcp://127.0.0.1:5001"]]', "Z" * 40)  # fmt: skip
COUNTERS = [("writer.batches", 12), ("writer.dead_letters", 2)]

_WF = "id, workflow_name, status, created_at, started_at, completed_at, success, error_message, metadata, instance_id, last_updated"
_TASK = (
    "id, workflow_id, task_name, status, created_at, started_at, completed_at, success, error_message,"
    " output, logs, retry_count, execution_order, instance_id, last_updated"
)
_EVENT = "id, workflow_id, task_id, event_type, message, timestamp, data, instance_id"
_INSTANCE = (
    "id, pid, process_create_time, host, started_at, last_seen, ended_at, state, last_seq, rejected, boot_id"
)
_DEAD = "id, received_at, instance_id, seq, reason, raw"
_LEASE = (
    "id, pid, process_create_time, host, endpoint, epoch, acquired_at, heartbeat_at, released_at, boot_id,"
    " heartbeat_boot_ns, commit_seq, feed_id, endpoints, public_key"
)
TABLES = [
    ("workflow_executions", _WF, WORKFLOWS),
    ("task_executions", _TASK, TASKS),
    ("task_log_lines", "task_id, line_no, line", LOG_LINES),
    ("audit_events", _EVENT, EVENTS),
    ("instances", _INSTANCE, INSTANCES),
    ("dead_letters", _DEAD, DEAD_LETTERS),
    ("writer_lease", _LEASE, [LEASE]),
    ("counters", "name, value", COUNTERS),
]
BOOLEAN_COLUMNS = {"success"}


def fill_sqlite(path: Path) -> None:
    from see_persistence.writer.storage import upgrade_schema

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        upgrade_schema(conn, BASE_US)
        conn.execute("BEGIN")
        for table, columns, rows in TABLES:
            marks = ", ".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
    finally:
        conn.close()


def create_postgresql_schema(url: str) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        for statement in schema_postgresql.upgrade_statements(0):
            conn.execute(statement)
        conn.execute(schema_postgresql.version_row_statement(), (schema.SCHEMA_VERSION, at(0)))


def postgresql_rows(columns: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`rows` as PostgreSQL takes them: success as a boolean; text (times, JSON) as it is."""
    names = [name.strip() for name in columns.split(",")]
    return [
        tuple(
            bool(v) if n in BOOLEAN_COLUMNS and v is not None else v for n, v in zip(names, row, strict=True)
        )
        for row in rows
    ]


def fill_postgresql(url: str) -> None:
    create_postgresql_schema(url)
    with psycopg.connect(url) as conn, conn.transaction():
        for table, columns, rows in TABLES:
            marks = ", ".join(["%s"] * len(columns.split(",")))
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})", postgresql_rows(columns, rows)
                )


@pytest.fixture
def both(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Reader, Reader]]:
    """(SQLite Reader, PostgreSQL Reader) of the same rows."""
    db = tmp_path / "workflows.db"
    fill_sqlite(db)
    fill_postgresql(postgres_url)
    with Reader(db) as lite, Reader(postgres_url) as pg:
        yield lite, pg


def test_a_url_makes_a_postgresql_reader_and_a_path_the_sqlite_one(postgres_url: str, tmp_path: Path) -> None:
    from see_persistence.reader.postgresql import PostgresReader

    with Reader(postgres_url) as pg:
        assert isinstance(pg, PostgresReader) and isinstance(pg, Reader)
        assert "postgresql://" in repr(pg)
    assert type(Reader(tmp_path / "x.db")) is Reader


CALLS = [
    ("get_workflow", ("w01",)),
    ("get_workflow", ("w04",)),
    ("get_workflow", ("nope",)),
    ("list_workflows", ()),
    ("list_workflows", (3, 2)),
    ("list_workflows", (100, 0, "failed")),
    ("list_workflows", (100, 0, None, INSTANCE_A)),
    ("list_workflows", (2, 1, "completed", INSTANCE_A)),
    ("get_workflows_for_instance", (INSTANCE_A,)),
    ("get_workflows_for_instance", (INSTANCE_B, None)),
    ("get_workflows_for_instance", (INSTANCE_A, None, 2)),
    ("get_tasks_for_workflow", ("w01",)),
    ("get_tasks_for_workflow", ("w01", None, 1)),  # LIMIT -1 on SQLite, LIMIT NULL here
    ("get_tasks_for_workflow", ("w01", 2, 1)),
    ("get_task", ("t05",)),
    ("get_task", ("t03",)),
    ("get_audit_trail", ("w01",)),
    ("get_audit_trail", ("w01", 2, 1)),
    ("get_audit_event", ("e04",)),
    ("get_instances", ()),
    ("get_instance", (INSTANCE_B,)),
    ("get_active_instances", ()),
    ("get_instance_stats", ()),
    ("get_rejections", ()),
    ("get_rejections", (INSTANCE_A,)),
    ("get_counters", ()),
    ("count_rows", ()),
]


@pytest.mark.parametrize(("method", "args"), CALLS, ids=[f"{m}{a}"[:60] for m, a in CALLS])
def test_both_backends_give_equal_models_field_by_field(
    both: tuple[Reader, Reader], method: str, args: tuple[Any, ...]
) -> None:
    lite, pg = both
    expected = getattr(lite, method)(*args)
    got = getattr(pg, method)(*args)
    assert got == expected
    for one, other in zip(
        got if isinstance(got, list) else [got],
        expected if isinstance(expected, list) else [expected],
        strict=True,
    ):
        if isinstance(one, BaseModel):
            for name in type(one).model_fields:
                value, wanted = getattr(one, name), getattr(other, name)
                assert value == wanted, name
                assert type(value) is type(wanted), name  # bool stays bool, datetime datetime
                if hasattr(value, "tzinfo"):
                    assert value.tzinfo is wanted.tzinfo, name  # datetime.timezone.utc on both


def test_the_spilled_log_and_the_json_values_read_as_on_sqlite(both: tuple[Reader, Reader]) -> None:
    _lite, pg = both
    task = pg.get_task("t05")
    assert task is not None and task.logs == ["first", "second", "third — ü"]
    workflow = pg.get_workflow("w04")
    assert workflow is not None and workflow.metadata == {"ü": [1, 2.5, None, True], "z": {"a": "b"}}
    assert [w.metadata for w in pg.list_workflows(status="cancelled")] == [[1, 2]]
    w07 = pg.get_workflow("w07")
    assert w07 is not None and w07.metadata is None  # JSON null
    w02 = pg.get_workflow("w02")
    assert w02 is not None and w02.metadata == {}  # NULL: the seed's "no metadata"


def test_writer_status_is_the_same_lease(both: tuple[Reader, Reader]) -> None:
    lite, pg = both
    a, b = lite.get_writer_status(), pg.get_writer_status()
    assert a is not None and b is not None
    assert a.model_copy(update={"heartbeat_age_s": None}) == b.model_copy(update={"heartbeat_age_s": None})
    assert b.alive and b.endpoints == (("tcp://127.0.0.1:5000", "tcp://127.0.0.1:5001"),)
    # What a Client reads instead, without the models: the same values on both backends.
    for reader, status in ((lite, a), (pg, b)):
        lease = reader.writer_lease()
        assert lease is not None
        assert type(status)(**{**vars(lease), "heartbeat_age_s": None}) == status.model_copy(
            update={"heartbeat_age_s": None}
        )
        instance = reader.get_instance(INSTANCE_A)
        assert instance is not None
        assert reader.instance_progress(INSTANCE_A) == (instance.last_seq, instance.rejected)
        assert reader.instance_progress("no-such-instance") is None


def test_list_workflow_rows_and_query_give_the_sqlite_values(both: tuple[Reader, Reader]) -> None:
    lite, pg = both
    for a, b in zip(lite.list_workflow_rows(limit=100), pg.list_workflow_rows(limit=100), strict=True):
        for name, x, y in zip(pg.WORKFLOW_ROW_COLUMNS, a, b, strict=True):
            if name == "metadata" and x is not None:
                assert json.loads(x) == json.loads(y)  # jsonb spells JSON its own way
            else:
                assert x == y, name
    sql = "SELECT id, created_at, success FROM workflow_executions WHERE status = ? AND instance_id = ? ORDER BY id"
    assert pg.query(sql, ("completed", INSTANCE_A)) == lite.query(sql, ("completed", INSTANCE_A))
    assert pg.query("SELECT count(*) FROM audit_events") == [(5,)]


def test_a_reader_made_before_the_schema_reads_it_once_it_exists(postgres_url: str) -> None:
    with Reader(postgres_url) as pg:
        assert pg.get_writer_status() is None
        assert pg.get_instances() == [] and pg.get_rejections() == [] and pg.get_counters() == {}
        fill_postgresql(postgres_url)
        assert pg.get_instance(INSTANCE_A) is not None
        assert len(pg.list_workflows()) == len(WORKFLOWS)


def test_query_placeholders_both_styles_and_percent_signs(both: tuple[Reader, Reader]) -> None:
    _lite, pg = both
    assert pg.query("SELECT ?::text || '?' || '%', ?", ("a", 2)) == [("a?%", 2)]
    assert pg.query("SELECT %(x)s::int + 1", {"x": 1}) == [(2,)]
    assert pg.query("SELECT %s::int * 2", (21,)) == [(42,)]
    # Without parameters the text is untouched: jsonb's ? operator works.
    assert pg.query("SELECT id FROM workflow_executions WHERE metadata ? 'branch'") == [("w01",)]


def test_query_refuses_writes_because_the_transaction_is_read_only(both: tuple[Reader, Reader]) -> None:
    _lite, pg = both
    with pytest.raises(ReadOnlyViolation) as caught:
        pg.query("INSERT INTO counters (name, value) VALUES (?, ?)", ("x", 1))
    # What a user sees:
    assert str(caught.value) == (
        "Reader.query runs read-only SQL only: cannot execute INSERT in a read-only transaction"
    )
    assert isinstance(caught.value, PermissionError)
    for statement in (
        "UPDATE workflow_executions SET status = 'failed'",
        "DELETE FROM audit_events",
        "CREATE TABLE x (a int)",
        "SELECT nextval(pg_get_serial_sequence('dead_letters', 'id'))",
    ):
        with pytest.raises(ReadOnlyViolation, match="read-only transaction"):
            pg.query(statement)
    # One statement at a time: a second one cannot leave the read-only transaction.
    with pytest.raises(psycopg.Error, match="multiple commands"):
        pg.query("COMMIT; INSERT INTO counters (name, value) VALUES ('y', 1)")
    # Switching the transaction to read-write affects that statement's transaction alone.
    pg.query("SET TRANSACTION READ WRITE")
    pg.query("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    pg.query("SET default_transaction_read_only = off")
    with pytest.raises(ReadOnlyViolation):
        pg.query("DELETE FROM counters")
    assert pg.get_counters() == dict(COUNTERS)


def test_an_advisory_lock_taken_through_query_is_let_go(
    both: tuple[Reader, Reader], postgres_url: str
) -> None:
    _lite, pg = both
    pg.query("SELECT pg_advisory_lock(4242)")  # a session lock, on a pooled connection
    with psycopg.connect(postgres_url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)


def test_threads_share_the_pool(both: tuple[Reader, Reader]) -> None:
    lite, pg = both
    expected = lite.list_workflows()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                assert pg.list_workflows() == expected
                assert pg.get_tasks_for_workflow("w01") == lite.get_tasks_for_workflow("w01")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures


def test_every_read_is_in_a_read_only_transaction(both: tuple[Reader, Reader]) -> None:
    _lite, pg = both
    assert pg.query("SHOW transaction_read_only") == [("on",)]
    assert pg.query("SHOW TimeZone") == [("UTC",)]
    from see_persistence.reader.postgresql import PostgresReader

    assert isinstance(pg, PostgresReader)
    assert pg._fetch("SHOW transaction_read_only") == [("on",)]  # the Reader's own statements too


def test_a_forked_child_reads_through_its_own_connections(both: tuple[Reader, Reader]) -> None:
    lite, pg = both
    expected = lite.get_workflow("w01")
    assert pg.get_workflow("w01") == expected  # the parent's pool is open
    pid = os.fork()
    if pid == 0:  # the child: sharing the parent's sessions would garble both
        code = 1
        try:
            code = 0 if pg.get_workflow("w01") == expected else 2
        finally:
            os._exit(code)
    done = wait_until(lambda: (reaped := os.waitpid(pid, os.WNOHANG))[0] and reaped, 60, "the forked child")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert pg.get_workflow("w01") == expected  # the child left the parent's sessions alone


def test_close_then_read_again(both: tuple[Reader, Reader]) -> None:
    _lite, pg = both
    pg.close()
    assert pg.get_workflow("w01") is not None


def test_watch_starts_without_a_writer_or_a_schema(postgres_url: str, tmp_path: Path) -> None:
    # The feed itself is tested with real writers in test_postgresql_writer_feed.py.
    with Reader(postgres_url) as pg, pg.watch(keys_dir=tmp_path / "keys") as watcher:
        assert watcher.get(timeout=30) == Resync(ResyncCause.STARTED, 0)


def test_a_database_that_does_not_exist_says_so_at_once(postgres_url: str) -> None:
    missing = postgres_url.replace("/see_test_", "/see_missing_")
    # At once: the first connection is made alone, where the pool would retry until its timeout.
    with Reader(missing) as pg, pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg.get_workflow("w01")


def test_the_environment_variable_can_name_the_server(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from see_persistence.locations import DB_ENV_VAR

    fill_postgresql(postgres_url)
    monkeypatch.setenv(DB_ENV_VAR, postgres_url)
    with Reader() as pg:
        assert pg.get_workflow("w01") is not None


# -- the SQL and value translation, without a server ----------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("sql", "count", "converted"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", 2, "SELECT a FROM t WHERE b = %s AND c = %s"),
        ("SELECT '?', \"?\", ? -- ?\n", 1, "SELECT '?', \"?\", %s -- ?\n"),
        ("SELECT 'it''s ?', E'\\'?', ?", 1, "SELECT 'it''s ?', E'\\'?', %s"),
        ("SELECT $$ ? $$, $x$ ? $x$, ? /* ? */", 1, "SELECT $$ ? $$, $x$ ? $x$, %s /* ? */"),
        ("SELECT '50%', ? LIKE 'a%'", 1, "SELECT '50%%', %s LIKE 'a%%'"),
    ],
)
def test_qmark_placeholders_outside_quotes_only(sql: str, count: int, converted: str) -> None:
    assert count_qmarks(sql) == count
    assert qmark_to_psycopg(sql) == converted


@pytest.mark.unit
def test_nullable_sort_columns_sort_null_first_as_on_sqlite() -> None:
    assert (
        sqlite_null_order(
            "SELECT a FROM t WHERE w = ? ORDER BY execution_order, created_at, id LIMIT ? OFFSET ?"
        )
        == "SELECT a FROM t WHERE w = ? ORDER BY execution_order NULLS FIRST, created_at, id LIMIT ? OFFSET ?"
    )
    assert sqlite_null_order("SELECT a FROM i ORDER BY started_at DESC") == (
        "SELECT a FROM i ORDER BY started_at DESC NULLS LAST"
    )
    same = "SELECT a FROM w ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
    assert sqlite_null_order(same) == same  # NOT NULL columns: the index still gives the order


@pytest.mark.unit
def test_user_statement_styles() -> None:
    assert user_statement("SELECT 1", ()) == ("SELECT 1", None)
    assert user_statement("SELECT ?", (1,)) == ("SELECT %s", (1,))
    assert user_statement("SELECT %s", (1,)) == ("SELECT %s", (1,))
    assert user_statement("SELECT %(a)s", {"a": 1}) == ("SELECT %(a)s", {"a": 1})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "rfc3339"),
    [
        ("2026-01-02 03:04:05.123456+00", "2026-01-02T03:04:05.123456+00:00"),
        ("2026-01-02 03:04:05+00", "2026-01-02T03:04:05.000000+00:00"),
        ("2026-01-02 03:04:05.5+00", "2026-01-02T03:04:05.500000+00:00"),
        ("2026-01-02 04:04:05.25+01", "2026-01-02T03:04:05.250000+00:00"),
        ("2026-01-02 08:34:05+05:30", "2026-01-02T03:04:05.000000+00:00"),
        ("infinity", "infinity"),
    ],
)
def test_timestamptz_text_becomes_the_writers_form(text: str, rfc3339: str) -> None:
    assert rfc3339_text(text) == rfc3339
