"""The schema (protocol/schema.py) against the S_E_E seed DDL, on in-memory SQLite databases."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from see_persistence.protocol import schema
from see_persistence.protocol.schema import (
    SCHEMA_VERSION,
    SEED_COLUMNS,
    SEED_INDEXES,
    SEED_TABLES,
    column_additions,
    upgrade_statements,
    version_row_statement,
)

pytestmark = pytest.mark.unit

# The S_E_E seed DDL, verbatim: the reference the Rust core was written against.
SEED_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS workflow_executions (id TEXT PRIMARY KEY, workflow_name TEXT NOT NULL, status TEXT NOT NULL, created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, completed_at TIMESTAMP, success BOOLEAN, error_message TEXT, metadata TEXT, instance_id TEXT, last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS task_executions (id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, task_name TEXT NOT NULL, status TEXT NOT NULL, created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, completed_at TIMESTAMP, success BOOLEAN, error_message TEXT, output TEXT, logs TEXT, retry_count INTEGER DEFAULT 0, execution_order INTEGER DEFAULT 0, instance_id TEXT, last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP, FOREIGN KEY (workflow_id) REFERENCES workflow_executions(id));
CREATE TABLE IF NOT EXISTS audit_events (id TEXT PRIMARY KEY, workflow_id TEXT, task_id TEXT, event_type TEXT NOT NULL, message TEXT NOT NULL, timestamp TIMESTAMP NOT NULL, data TEXT, instance_id TEXT);
CREATE INDEX IF NOT EXISTS idx_workflow_executions_created_at ON workflow_executions(created_at);
CREATE INDEX IF NOT EXISTS idx_workflow_executions_status ON workflow_executions(status);
CREATE INDEX IF NOT EXISTS idx_workflow_executions_instance_id ON workflow_executions(instance_id);
CREATE INDEX IF NOT EXISTS idx_workflow_executions_last_updated ON workflow_executions(last_updated);
CREATE INDEX IF NOT EXISTS idx_task_executions_workflow_id ON task_executions(workflow_id);
CREATE INDEX IF NOT EXISTS idx_task_executions_status ON task_executions(status);
CREATE INDEX IF NOT EXISTS idx_task_executions_instance_id ON task_executions(instance_id);
CREATE INDEX IF NOT EXISTS idx_audit_events_workflow_id ON audit_events(workflow_id);
CREATE INDEX IF NOT EXISTS idx_audit_events_timestamp ON audit_events(timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_events_instance_id ON audit_events(instance_id);
"""  # noqa: E501

SEED_INDEX_NAMES = (
    "idx_workflow_executions_created_at",
    "idx_workflow_executions_status",
    "idx_workflow_executions_instance_id",
    "idx_workflow_executions_last_updated",
    "idx_task_executions_workflow_id",
    "idx_task_executions_status",
    "idx_task_executions_instance_id",
    "idx_audit_events_workflow_id",
    "idx_audit_events_timestamp",
    "idx_audit_events_instance_id",
)
LAYER_TABLES = ("writer_lease", "instances", "dead_letters", "counters", "task_log_lines", "prune_jobs")
ALL_SEED_TABLES = ("schema_version", *SEED_TABLES)

Columns = list[tuple[str, str, int, str | None, int]]


def seed_db() -> sqlite3.Connection:
    """An in-memory database made with the seed DDL verbatim."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(SEED_DDL)
    return conn


def upgraded_db(from_version: int = 0, conn: sqlite3.Connection | None = None) -> sqlite3.Connection:
    """Run upgrade_statements(from_version) one by one on `conn` (a new empty database)."""
    conn = conn if conn is not None else sqlite3.connect(":memory:")
    for statement in upgrade_statements(from_version):
        conn.execute(statement)
    conn.commit()
    return conn


@pytest.fixture
def seed() -> Iterator[sqlite3.Connection]:
    conn = seed_db()
    yield conn
    conn.close()


@pytest.fixture
def ours() -> Iterator[sqlite3.Connection]:
    conn = upgraded_db(0)
    yield conn
    conn.close()


def columns(conn: sqlite3.Connection, table: str) -> Columns:
    """(name, declared type, notnull, default, pk) of each column, in order."""
    return [
        (name, decl, notnull, default, pk)
        for _cid, name, decl, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
    ]


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows} - {"sqlite_sequence"}


def indexes(conn: sqlite3.Connection, table: str) -> dict[str, tuple[int, str, int, list[str]]]:
    """name -> (unique, origin, partial, indexed columns) of every index of `table`."""
    result: dict[str, tuple[int, str, int, list[str]]] = {}
    for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
        cols = [col for _rank, _cid, col in conn.execute(f"PRAGMA index_info({name})")]
        result[name] = (unique, origin, partial, cols)
    return result


def foreign_keys(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, str]]:
    rows = conn.execute(f"PRAGMA foreign_key_list({table})")
    return [(row[2], row[3], row[4]) for row in rows]  # (table, from, to)


def master_sql(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
    return dict(rows.fetchall())


# --- the seed, column for column ---------------------------------------------------------------


def test_reference_ddl_builds_the_seed() -> None:
    conn = seed_db()
    assert tables(conn) == set(ALL_SEED_TABLES)
    assert len([i for t in SEED_TABLES for i in indexes(conn, t) if i.startswith("idx_")]) == 10


@pytest.mark.parametrize("table", ALL_SEED_TABLES)
def test_table_info_matches_the_seed(seed: sqlite3.Connection, ours: sqlite3.Connection, table: str) -> None:
    expected = columns(seed, table)
    assert expected, f"{table} missing from the seed DDL"
    assert columns(ours, table) == expected


@pytest.mark.parametrize("table", SEED_TABLES)
def test_indexes_match_the_seed(seed: sqlite3.Connection, ours: sqlite3.Connection, table: str) -> None:
    seed_indexes = indexes(seed, table)
    own = {name: index for name, index in indexes(ours, table).items() if name not in seed_indexes}
    assert {name: indexes(ours, table)[name] for name in seed_indexes} == seed_indexes
    # Every index the layer adds to a seed table is named apart from the seed's.
    assert all(name.startswith("idx_see_") for name in own), own


def test_the_list_views_have_their_indexes(ours: sqlite3.Connection) -> None:
    created = indexes(ours, "workflow_executions")
    assert created["idx_see_workflow_executions_status_created"][3] == ["status", "created_at", "id"]
    assert created["idx_see_workflow_executions_instance_created"][3] == ["instance_id", "created_at", "id"]


@pytest.mark.parametrize("table", SEED_TABLES)
def test_foreign_keys_match_the_seed(seed: sqlite3.Connection, ours: sqlite3.Connection, table: str) -> None:
    assert foreign_keys(ours, table) == foreign_keys(seed, table)


def test_task_executions_references_workflow_executions(ours: sqlite3.Connection) -> None:
    assert foreign_keys(ours, "task_executions") == [("workflow_executions", "workflow_id", "id")]


@pytest.mark.parametrize("index", SEED_INDEX_NAMES)
def test_each_seed_index(seed: sqlite3.Connection, ours: sqlite3.Connection, index: str) -> None:
    def describe(conn: sqlite3.Connection) -> tuple[str, list[str]]:
        row = conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)
        ).fetchone()
        assert row is not None, f"index {index} is missing"
        cols = [col for _rank, _cid, col in conn.execute(f"PRAGMA index_info({index})")]
        return row[0], cols

    assert describe(ours) == describe(seed)


def test_seed_indexes_constant_matches_the_seed(seed: sqlite3.Connection) -> None:
    found = {
        name: (table, cols[0])
        for table in SEED_TABLES
        for name, (_u, _o, _p, cols) in indexes(seed, table).items()
        if name.startswith("idx_")
    }
    assert found == SEED_INDEXES
    assert tuple(SEED_INDEXES) == SEED_INDEX_NAMES


def test_seed_columns_constant_matches_the_seed(seed: sqlite3.Connection) -> None:
    assert tuple(SEED_COLUMNS) == SEED_TABLES
    for table in SEED_TABLES:
        from_ddl = tuple((name, decl) for name, decl, _nn, _d, _pk in columns(seed, table))
        assert SEED_COLUMNS[table] == from_ddl, table


def test_upgrade_from_zero_creates_seed_and_layer_tables_only(ours: sqlite3.Connection) -> None:
    assert tables(ours) == {*ALL_SEED_TABLES, *LAYER_TABLES}


# --- the layer's own tables --------------------------------------------------------------------

LAYER_COLUMNS: dict[str, set[str]] = {
    "writer_lease": {
        "id",
        "pid",
        "process_create_time",
        "host",
        "endpoint",
        "epoch",
        "acquired_at",
        "heartbeat_at",
    },
    "counters": {"name", "value"},
    "instances": {
        "id",
        "pid",
        "process_create_time",
        "host",
        "started_at",
        "last_seen",
        "ended_at",
        "state",
        "last_seq",
    },
    "dead_letters": {"id", "received_at", "instance_id", "seq", "reason", "raw"},
    "task_log_lines": {"task_id", "line_no", "line"},
    "prune_jobs": {
        "id",
        "older_than",
        "statuses",
        "instance_id",
        "state",
        "workflow_executions",
        "task_executions",
        "audit_events",
        "chunks",
        "created_at",
        "updated_at",
        "finished_at",
    },
}


def test_upgrade_from_one_adds_layer_tables_without_touching_the_seed(
    seed: sqlite3.Connection,
) -> None:
    seed.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at) "
        "VALUES ('wf-old', 'legacy', 'completed', '2024-01-01T00:00:00.000000+00:00')"
    )
    seed.commit()
    before = master_sql(seed)
    before_columns = {t: columns(seed, t) for t in ALL_SEED_TABLES}

    upgraded_db(1, seed)

    after = master_sql(seed)
    assert {name: after[name] for name in before} == before
    assert {t: columns(seed, t) for t in ALL_SEED_TABLES} == before_columns
    assert tables(seed) - set(ALL_SEED_TABLES) == set(LAYER_TABLES)
    for table, expected in LAYER_COLUMNS.items():
        assert expected <= {name for name, *_ in columns(seed, table)}, table
    rows = seed.execute("SELECT id, workflow_name, status FROM workflow_executions").fetchall()
    assert rows == [("wf-old", "legacy", "completed")]


def test_upgrade_from_one_creates_no_seed_object() -> None:
    conn = seed_db()
    before = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    upgraded_db(1, conn)
    added = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")} - before
    assert added.isdisjoint(SEED_INDEX_NAMES) and added.isdisjoint(ALL_SEED_TABLES)
    assert {name for name in added if name.startswith("idx_") and name not in LAYER_TABLES} == {
        "idx_instances_state",
        "idx_see_prune_jobs_running",
        *schema.LAYER_INDEXES,
    }


@pytest.mark.parametrize("version", [SCHEMA_VERSION, SCHEMA_VERSION + 1, 99])
def test_up_to_date_needs_no_statements(version: int) -> None:
    assert upgrade_statements(version) == []


def test_upgrade_steps_are_ordered_and_reach_schema_version() -> None:
    versions = [version for version, _ in schema.UPGRADE_STEPS]
    assert versions == sorted(versions)
    assert versions[-1] == SCHEMA_VERSION


def test_writer_lease_holds_one_row(ours: sqlite3.Connection) -> None:
    row = (5, 1.5, "box", "ipc:///x", 1, "t", "t")
    insert = (
        "INSERT INTO writer_lease (id, pid, process_create_time, host, endpoint, epoch, "
        "acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    ours.execute(insert, (1, *row))
    with pytest.raises(sqlite3.IntegrityError):
        ours.execute(insert, (2, *row))


def test_instances_defaults(ours: sqlite3.Connection) -> None:
    ours.execute("INSERT INTO instances (id) VALUES ('i-1')")
    assert ours.execute("SELECT state, last_seq FROM instances").fetchone() == ("live", 0)


# --- idempotence -------------------------------------------------------------------------------


def test_full_upgrade_twice_raises_nothing(ours: sqlite3.Connection) -> None:
    before = master_sql(ours)
    upgraded_db(0, ours)
    assert master_sql(ours) == before


@pytest.mark.parametrize("index", range(len(upgrade_statements(0))))
def test_each_statement_is_idempotent(ours: sqlite3.Connection, index: int) -> None:
    ours.execute(upgrade_statements(0)[index])
    ours.execute(upgrade_statements(0)[index])


def test_full_upgrade_on_an_unversioned_seed_file(seed: sqlite3.Connection) -> None:
    """The seed's file may have its tables but no version row: upgrading from 0 is safe."""
    before = {t: columns(seed, t) for t in ALL_SEED_TABLES}
    upgraded_db(0, seed)
    assert {t: columns(seed, t) for t in ALL_SEED_TABLES} == before
    assert tables(seed) == {*ALL_SEED_TABLES, *LAYER_TABLES}


def test_version_row_statement_records_one_row(ours: sqlite3.Connection) -> None:
    ours.execute(version_row_statement(), (SCHEMA_VERSION, "2024-01-01T00:00:00.000000+00:00"))
    ours.execute(version_row_statement(), (SCHEMA_VERSION, "2024-01-02T00:00:00.000000+00:00"))
    assert ours.execute("SELECT version, applied_at FROM schema_version").fetchall() == [
        (SCHEMA_VERSION, "2024-01-02T00:00:00.000000+00:00")
    ]


def test_upgrade_from_two_adds_only_the_counters_table_the_view_indexes_and_the_log_lines() -> None:
    full = tables(upgraded_db(0))
    conn = upgraded_db(0)
    conn.execute("DROP TABLE counters")
    conn.execute("DROP TABLE task_log_lines")
    for statement in upgrade_statements(2):
        conn.execute(statement)
    assert tables(conn) == full
    steps = dict(schema.UPGRADE_STEPS)
    assert all("counters" in s for s in steps[3])
    assert steps[4] and all(s.startswith("CREATE INDEX IF NOT EXISTS idx_see_") for s in steps[4])
    assert len(steps[5]) == 1 and "CREATE TABLE IF NOT EXISTS task_log_lines" in steps[5][0]
    assert upgrade_statements(4) == [*steps[5], *steps[6]]


def test_task_log_lines_are_keyed_by_task_and_line_and_go_with_their_task(ours: sqlite3.Connection) -> None:
    ours.execute("PRAGMA foreign_keys = ON")  # as the writer's connection has it
    pk = sorted((pk, name) for name, _decl, _nn, _d, pk in columns(ours, "task_log_lines") if pk)
    assert pk == [(1, "task_id"), (2, "line_no")]
    assert foreign_keys(ours, "task_log_lines") == [("task_executions", "task_id", "id")]
    ours.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at)"
        " VALUES ('w', 'n', 'running', 't')"
    )
    ours.execute(
        "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at)"
        " VALUES ('t', 'w', 'n', 'running', 't')"
    )
    ours.execute("INSERT INTO task_log_lines VALUES ('t', 0, 'a'), ('t', 1, 'b')")
    with pytest.raises(sqlite3.IntegrityError):
        ours.execute("INSERT INTO task_log_lines VALUES ('t', 1, 'again')")
    with pytest.raises(sqlite3.IntegrityError):
        ours.execute("INSERT INTO task_log_lines VALUES ('no-such-task', 0, 'x')")
    ours.execute("DELETE FROM task_executions WHERE id = 't'")
    assert ours.execute("SELECT COUNT(*) FROM task_log_lines").fetchone() == (0,)


def test_upgrade_from_five_adds_only_the_prune_jobs_table_and_its_index() -> None:
    conn = upgraded_db(0)
    before = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.execute("DROP TABLE prune_jobs")
    upgraded_db(5, conn)
    after = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert after == before
    assert all("prune_jobs" in s for s in upgrade_statements(5))


def test_column_additions_come_after_their_table() -> None:
    assert ("instances", "rejected", "INTEGER DEFAULT 0") in column_additions(3)
    assert all(table in ("instances", "writer_lease") for table, _, _ in column_additions(3))
    assert column_additions(SCHEMA_VERSION) == []
