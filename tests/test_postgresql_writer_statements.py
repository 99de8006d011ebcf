"""The PostgreSQL forms of the SQL the writer shares with SQLite: plain function calls, no server."""

from __future__ import annotations

import pytest

from see_persistence.protocol import statements
from see_persistence.protocol import statements_postgresql as pgsql


def test_named_placeholders_become_psycopg_s_and_casts_stay() -> None:
    sql = "SELECT x::text FROM t WHERE a = :a AND b IN (:b, :a) AND c = 'x:y'"
    assert pgsql.named(sql) == "SELECT x::text FROM t WHERE a = %(a)s AND b IN (%(b)s, %(a)s) AND c = 'x:y'"


def test_the_instance_statements_keep_sqlite_s_parameters() -> None:
    assert "%(rejected)s" in pgsql.RECORD_INSTANCE_SEQ and ":" not in pgsql.RECORD_INSTANCE_SEQ.replace(
        "::", ""
    )
    assert "CAST(%(clock_skew_us)s AS bigint)" in pgsql.RECORD_INSTANCE_HEARD


@pytest.mark.parametrize(
    "sqlite_sql",
    [
        statements.RECORD_PRUNE_JOB,
        statements.COUNT_PRUNE_CHUNK,
        statements.PRUNE_WORKFLOWS,
        statements.prune_chunk_workflows(3),
        *(delete for _table, delete in statements.PRUNE_CHILD_DELETES),
    ],
)
def test_prune_statements_lose_every_sqlite_only_form(sqlite_sql: str) -> None:
    translated = pgsql.prune_statement(sqlite_sql)
    assert "?" not in translated and "json_each" not in translated and "rowid" not in translated
    assert translated.count("%s") == sqlite_sql.count("?")


def test_the_unfinished_job_reads_its_cutoff_as_rfc3339_text() -> None:
    assert "to_char(older_than AT TIME ZONE 'UTC'" in pgsql.UNFINISHED_PRUNE_JOB
    assert pgsql.UNFINISHED_PRUNE_JOB.endswith(statements.UNFINISHED_PRUNE_JOB.split("older_than,", 1)[1])
