"""The writer's statements on PostgreSQL (protocol/statements_postgresql.py), without a server.

That they run, and do what the SQLite ones do, is tests/test_postgresql_writer.py's part.
"""

from __future__ import annotations

import re

import pytest

from see_persistence.protocol import binding, operations, statements
from see_persistence.protocol import statements_postgresql as pgsql

pytestmark = pytest.mark.unit


def test_every_statement_the_writer_binds_has_a_postgresql_form_taking_the_same_parameters() -> None:
    assert set(pgsql.COMPILED) == {s.sql for s in statements.COMPILED.values()}
    for (name, status), sqlite in statements.COMPILED.items():
        pg = pgsql.for_statement(sqlite)
        assert pg.sql.count("%s") == len(pg.order), (name, status)
        assert "?" not in pg.sql and not re.search(r":[a-z_]", pg.sql), (name, status)
        params = tuple(f"<{n}>" for n in sqlite.names)
        assert [p.strip("<>") for p in pg.params(params)] == [sqlite.names[i] for i in pg.order]
        assert pg.must_change_a_row == sqlite.must_change_a_row


def test_the_status_rules_come_from_the_one_table() -> None:
    completed = pgsql.for_statement(statements.COMPILED[(operations.UPDATE_WORKFLOW_STATUS, "completed")])
    assert "GREATEST(CAST(%s AS timestamptz), started_at)" in completed.sql
    assert "success = true" in completed.sql
    running = pgsql.for_statement(statements.COMPILED[(operations.UPDATE_TASK_STATUS, "running")])
    assert "LEAST(CAST(%s AS timestamptz), completed_at)" in running.sql and "success" not in running.sql


def test_copy_forms_put_each_value_and_constant_in_its_column() -> None:
    payload = {"id": "t1", "workflow_id": "w1", "task_name": "build", "execution_order": 3, "at_us": 10**15}
    bound = binding.FAST_BINDS[operations.CREATE_TASK](payload, "i1", "NOW")
    assert bound is not None
    statement, params = bound
    form = pgsql.COPY_FORMS[statement.sql]
    columns = re.search(r"\((.*)\)", form.sql).group(1).split(", ")  # type: ignore[union-attr]
    row = dict(zip(columns, form.row(params), strict=True))
    assert row["id"] == "t1" and row["workflow_id"] == "w1" and row["execution_order"] == 3
    assert (row["status"], row["logs"], row["retry_count"], row["instance_id"]) == ("pending", "[]", 0, "i1")
    assert row["last_updated"] == "NOW"
    assert statements.COMPILED[(operations.HELLO, None)].sql not in pgsql.COPY_FORMS  # an upsert
