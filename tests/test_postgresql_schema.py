"""The PostgreSQL schema on a real server, checked against the SQLite schema SQLite itself reports.

For every table, column and index that the SQLite upgrade steps make, the same name must exist
on PostgreSQL with the mapped type, the same NOT NULL, a default where SQLite has one, the same
key and the same indexed columns; and nothing more but the PostgreSQL-only additions (below).
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any

import pytest

from see_persistence.protocol import schema, schema_postgresql

psycopg = pytest.importorskip("psycopg")

# The mapping, written out independently of schema_postgresql: information_schema's name of the
# type each SQLite declared type must get, and the JSON columns that must be jsonb.
EXPECTED_TYPES = {
    "TEXT": "text",
    "INTEGER": "bigint",
    "REAL": "double precision",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp with time zone",
    "BLOB": "bytea",
}
JSONB_COLUMNS = {("workflow_executions", "metadata"), ("task_executions", "logs"), ("audit_events", "data")}

# What PostgreSQL has and SQLite has not (PostgreSQL is not read by the Rust core): the commit
# number of each audit event, for `tail --follow`, and its index.
POSTGRESQL_ONLY_COLUMNS = {("audit_events", "commit_seq"): ("bigint", True, True)}
POSTGRESQL_ONLY_INDEXES = {"idx_see_audit_events_commit_seq": ("audit_events", ["commit_seq", "id"], False)}

Catalog = dict[str, Any]


def sqlite_catalog() -> Catalog:
    """Tables, columns, keys and indexes of a new SQLite database, as SQLite reports them."""
    conn = sqlite3.connect(":memory:")
    for statement in schema.upgrade_statements(0):
        conn.execute(statement)
    for table, column, declaration in schema.column_additions(0):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    columns = {}
    keys = {}
    for table in tables:
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        # (name, declared type, notnull, has a default)
        columns[table] = {row[1]: (row[2], bool(row[3]), row[4] is not None) for row in info}
        keys[table] = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    indexes = {}
    for name, table, sql in conn.execute(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ):
        indexed = [row[2] for row in conn.execute(f"PRAGMA index_info({name})")]
        indexes[name] = (table, indexed, " WHERE " in sql.upper())
    conn.close()
    return {"columns": columns, "keys": keys, "indexes": indexes}


def postgresql_catalog(conn: Any, namespace: str = "public") -> Catalog:
    """The same description of the tables in `namespace` of a PostgreSQL database."""
    columns: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for table, column, data_type, nullable, default in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = %s",
        (namespace,),
    ):
        columns.setdefault(table, {})[column] = (data_type, nullable == "NO", default is not None)
    keys: dict[str, list[str]] = {}
    indexes: dict[str, tuple[str, list[str], bool]] = {}
    for index, table, indexed, primary, predicate in conn.execute(
        """SELECT i.relname, t.relname, array_agg(a.attname::text ORDER BY k.ord), x.indisprimary,
                  x.indpred IS NOT NULL
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
           WHERE n.nspname = %s
           GROUP BY i.relname, t.relname, x.indisprimary, x.indpred""",
        (namespace,),
    ):
        if primary:
            keys[table] = list(indexed)
        else:
            indexes[index] = (table, list(indexed), predicate)
    return {"columns": columns, "keys": keys, "indexes": indexes}


def create_schema(conn: Any, statements: list[str]) -> None:
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)


def test_every_table_column_and_index_of_sqlite_exists_with_its_mapped_type(postgres_url: str) -> None:
    expected = sqlite_catalog()
    with psycopg.connect(postgres_url) as conn:
        create_schema(conn, schema_postgresql.upgrade_statements(0))
        found = postgresql_catalog(conn)

    for (table, column), description in POSTGRESQL_ONLY_COLUMNS.items():
        assert found["columns"][table].pop(column) == description
    for index, description in POSTGRESQL_ONLY_INDEXES.items():
        assert found["indexes"].pop(index) == description
    assert set(found["columns"]) == set(expected["columns"])
    for table, sqlite_columns in expected["columns"].items():
        pg_columns = found["columns"][table]
        assert set(pg_columns) == set(sqlite_columns), table
        for column, (declared, not_null, has_default) in sqlite_columns.items():
            expected_type = "jsonb" if (table, column) in JSONB_COLUMNS else EXPECTED_TYPES[declared]
            data_type, pg_not_null, pg_has_default = pg_columns[column]
            where = f"{table}.{column}"
            assert data_type == expected_type, where
            # A primary key column is NOT NULL on PostgreSQL even where SQLite lets it be NULL.
            assert pg_not_null == (not_null or column in expected["keys"][table]), where
            assert pg_has_default == has_default, where
    assert found["keys"] == {table: key for table, key in expected["keys"].items() if key}
    assert found["indexes"] == expected["indexes"]
    assert len([name for name in found["indexes"] if name in schema.SEED_INDEXES]) == 10


def test_foreign_keys_hold_as_in_the_writer(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        create_schema(conn, schema_postgresql.upgrade_statements(0))
        rows = conn.execute(
            """SELECT tc.table_name, kcu.column_name, ccu.table_name, rc.delete_rule
               FROM information_schema.table_constraints tc
               JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
               JOIN information_schema.constraint_column_usage ccu USING (constraint_schema, constraint_name)
               JOIN information_schema.referential_constraints rc USING (constraint_schema, constraint_name)
               WHERE tc.constraint_type = 'FOREIGN KEY' ORDER BY 1"""
        ).fetchall()
    assert rows == [
        ("task_executions", "workflow_id", "workflow_executions", "NO ACTION"),
        ("task_log_lines", "task_id", "task_executions", "CASCADE"),
    ]


def test_upgrading_from_every_older_version_gives_the_fresh_schema(postgres_url: str) -> None:
    full = schema_postgresql.upgrade_statements(0)
    with psycopg.connect(postgres_url) as conn:
        create_schema(conn, full)
        fresh = postgresql_catalog(conn)
        for version in range(1, schema.SCHEMA_VERSION):
            namespace = f"from_v{version}"
            conn.execute(f"CREATE SCHEMA {namespace}")
            conn.execute(f"SET search_path TO {namespace}")
            rest = schema_postgresql.upgrade_statements(version)
            create_schema(conn, full[: len(full) - len(rest)])
            create_schema(conn, rest)
            create_schema(conn, full)  # all of it again: every statement is idempotent
            assert postgresql_catalog(conn, namespace) == fresh, namespace
            conn.commit()


def test_values_keep_what_the_sqlite_file_holds(postgres_url: str) -> None:
    created = "2024-05-01T12:00:00.123456+00:00"
    with psycopg.connect(postgres_url) as conn:
        create_schema(conn, schema_postgresql.upgrade_statements(0))
        conn.execute(
            schema_postgresql.version_row_statement(), (schema.SCHEMA_VERSION, "2024-05-01T12:00:00+00:00")
        )
        conn.execute(
            schema_postgresql.version_row_statement(), (schema.SCHEMA_VERSION, "2024-05-02T12:00:00+00:00")
        )
        conn.execute(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at, success, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            ("w1", "nightly", "completed", created, True, '{"branch": "main", "n": 18446744073709551617}'),
        )
        conn.execute(
            "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, logs)"
            " VALUES ('t1', 'w1', 'compile', 'running', %s, '[]')",
            (created,),
        )
        conn.execute("UPDATE task_executions SET logs = logs || jsonb_build_array(%s::text)", ("gcc -O2",))
        conn.execute(
            "INSERT INTO dead_letters (received_at, reason, raw) VALUES (%s, 'bad', %s)",
            (created, b"\x00\xff"),
        )
        row = conn.execute(
            "SELECT created_at, success, metadata->>'branch', metadata->'n', last_updated IS NOT NULL"
            " FROM workflow_executions WHERE metadata->>'branch' = 'main'"
        ).fetchone()
        logs = conn.execute("SELECT logs FROM task_executions").fetchone()
        letter = conn.execute("SELECT id, raw FROM dead_letters").fetchone()
        versions = conn.execute("SELECT version, applied_at FROM schema_version").fetchall()
    assert row is not None
    assert row[0] == datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert row[0].astimezone(datetime.timezone.utc).isoformat() == created
    assert row[1:] == (True, "main", 18446744073709551617, True)
    assert logs == (["gcc -O2"],)
    assert letter == (1, b"\x00\xff")
    assert [(v, a.astimezone(datetime.timezone.utc).isoformat()) for v, a in versions] == [
        (schema.SCHEMA_VERSION, "2024-05-02T12:00:00+00:00")
    ]


_INSERT_EVENT = "INSERT INTO audit_events (id, event_type, message, timestamp) VALUES (%s, 'x', 'm', now())"


def test_the_writer_adds_the_postgresql_only_column_to_a_database_already_at_the_version(
    postgres_url: str,
) -> None:
    from see_persistence.writer.pg_storage import upgrade_schema

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with conn.transaction():
            for statement in schema_postgresql.upgrade_statements(0):
                conn.execute(statement)
            conn.execute(
                schema_postgresql.version_row_statement(),
                (schema.SCHEMA_VERSION, "2024-05-01T12:00:00+00:00"),
            )
            conn.execute(_INSERT_EVENT, ("old",))
            # As a writer from before the addition left it.
            conn.execute("ALTER TABLE audit_events DROP COLUMN commit_seq")
        assert conn.execute(schema_postgresql.missing_additions_query()).fetchone() == (True,)
        assert upgrade_schema(conn, 0) == schema.SCHEMA_VERSION
        assert conn.execute(schema_postgresql.missing_additions_query()).fetchone() == (False,)
        assert conn.execute("SELECT id, commit_seq FROM audit_events").fetchall() == [("old", 0)]
        with conn.transaction():  # a commit of a writer: its fence sets the number
            conn.execute("SELECT set_config(%s, '7', true)", (schema_postgresql.COMMIT_SEQ_SETTING,))
            conn.execute(_INSERT_EVENT, ("new",))
        conn.execute(_INSERT_EVENT, ("late",))
        rows = conn.execute("SELECT id, commit_seq FROM audit_events ORDER BY commit_seq, id").fetchall()
        assert rows == [("late", 0), ("old", 0), ("new", 7)]
        found = postgresql_catalog(conn)
    assert found["indexes"]["idx_see_audit_events_commit_seq"] == (
        "audit_events",
        ["commit_seq", "id"],
        False,
    )
