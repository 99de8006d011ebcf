"""The writer's SQL on PostgreSQL: one statement per statement of protocol/statements.py.

The writer decodes, checks and binds every operation once, for either backend
(writer/batch.py): a bound operation is an SQLite `Statement` and its positional parameters.
Here each of those statements has its PostgreSQL form, written with the same named
parameters, so the same parameter tuple serves both: `PostgresStatement.order` says which of
the SQLite parameters goes to each `%s` (a name may appear more than once, or in another
order). The status rules stay in protocol/status.py; only the SQL that applies them differs.

What differs, and why:

- times are `timestamptz`, so "the later of two times" is GREATEST/LEAST, which skip NULLs;
  SQLite compares text and falls back to julianday() for times in other writers' forms.
- `success` is `boolean`; JSON columns are `jsonb`, so a task's empty log is `'[]'` cast by
  the column's type, and text the writer binds for them is parsed by the server.
- a hello's upsert compares token hashes with IS NOT DISTINCT FROM (SQLite's IS).
- a hello records the sender's `host_id` (leases.host_id) as on SQLite, and the writer's boot
  id (from the lease row it holds) only for an instance of the writer's own host id: a hello
  reaches a PostgreSQL writer over TCP, maybe from another machine, whose pids and boots say
  nothing of the sender's. Every parameter of its INSERT ... SELECT is cast: the server infers
  no type for a parameter in a select list.

No I/O here, as everywhere in protocol/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import statements
from .operations import (
    APPEND_TASK_LOG,
    AUDIT_EVENT,
    CREATE_TASK,
    CREATE_WORKFLOW,
    GOODBYE,
    HELLO,
    UPDATE_TASK_STATUS,
    UPDATE_WORKFLOW_STATUS,
)
from .status import STATUS_EFFECTS, Status

JSON_PARAMETERS = frozenset({"metadata", "data"})
"""Parameters bound as JSON text into a jsonb column (PostgreSQL refuses a \\u0000 escape in it)."""


def _status_update(table: str, status: Status, *, with_output: bool) -> str:
    """The UPDATE applying `status` to a row of `table`, by the rules of statements._status_update.

    completed_at is the later of :at and started_at; a started_at set after completion is at
    most completed_at: within a record completed_at is never before started_at, whatever the
    caller's clock did between two calls.
    """
    effect = STATUS_EFFECTS[status]
    sets = ["status = :status", "last_updated = :now"]
    if effect.sets_started_at:
        sets.append("started_at = COALESCE(started_at, LEAST(CAST(:at AS timestamptz), completed_at))")
    if effect.sets_completed_at:
        sets.append("completed_at = GREATEST(CAST(:at AS timestamptz), started_at)")
    if effect.success is not None:
        sets.append(f"success = {'true' if effect.success else 'false'}")
    sets.append("error_message = COALESCE(CAST(:error_message AS text), error_message)")
    if with_output:
        sets.append("output = COALESCE(CAST(:output AS text), output)")
    return f"UPDATE {table} SET {', '.join(sets)} WHERE id = :id"


INSERTS: dict[str, str] = {
    HELLO: """INSERT INTO instances (id, pid, process_create_time, host, started_at, last_seen, state,
            boot_id, token_hash, host_id, last_heard_at)
        SELECT CAST(:instance_id AS text), CAST(:pid AS bigint),
            CAST(:process_create_time AS double precision), CAST(:host AS text),
            CAST(:at AS timestamptz), CAST(:now AS timestamptz), 'live',
            CASE WHEN COALESCE(CAST(:host_id AS text), lease.host_id) IS NOT DISTINCT FROM lease.host_id
                THEN lease.boot_id END,
            CAST(:token_hash AS text), COALESCE(CAST(:host_id AS text), lease.host_id),
            CAST(:now AS timestamptz)
        FROM (SELECT 1) AS one LEFT JOIN writer_lease AS lease ON lease.id = 1
        ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid,
            process_create_time = EXCLUDED.process_create_time, host = EXCLUDED.host,
            started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen, state = 'live',
            ended_at = NULL, boot_id = EXCLUDED.boot_id, host_id = EXCLUDED.host_id,
            last_heard_at = EXCLUDED.last_heard_at
        WHERE instances.token_hash IS NOT DISTINCT FROM EXCLUDED.token_hash""",
    # Standard SQL, the same on both backends.
    GOODBYE: statements.INSERTS[GOODBYE],
    CREATE_WORKFLOW: statements.INSERTS[CREATE_WORKFLOW],
    CREATE_TASK: statements.INSERTS[CREATE_TASK],
    # One line, for completeness of the mapping; the writer gathers a batch's lines per task.
    APPEND_TASK_LOG: """UPDATE task_executions
        SET logs = COALESCE(logs, CAST('[]' AS jsonb)) || jsonb_build_array(CAST(:line AS text)),
            last_updated = :now
        WHERE id = :id""",
    AUDIT_EVENT: statements.INSERTS[AUDIT_EVENT],
}


def named(sql: str) -> str:
    """`sql` written for sqlite3 with `:name` parameters, for psycopg (`%(name)s`, a mapping).

    For statements whose SQL is the same on both backends but for the placeholders.
    """
    return _NAMED_PARAMETER.sub(r"%(\1)s", sql)


_NAMED_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")

RECORD_INSTANCE_SEQ = named(statements.RECORD_INSTANCE_SEQ)
"""Params (a mapping): instance_id, seq, now, rejected (statements.RECORD_INSTANCE_SEQ's)."""

RECORD_INSTANCE_HEARD = named(statements.RECORD_INSTANCE_HEARD).replace(
    "%(clock_skew_us)s", "CAST(%(clock_skew_us)s AS bigint)"
)
"""Params (a mapping): instance_id, now, clock_skew_us (None: not measured)."""

INSTANCE_CREDENTIALS = "SELECT last_seq, rejected, token_hash FROM instances WHERE id = %s"

INSERT_DEAD_LETTER = """INSERT INTO dead_letters (received_at, instance_id, seq, reason, raw)
    VALUES (%s, %s, %s, %s, %s)"""

TRIM_DEAD_LETTERS = "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - %s"
DEAD_LETTER_BYTES_TO_TRIM = """SELECT COALESCE(SUM(octet_length(raw)), 0) FROM dead_letters
    WHERE id <= (SELECT MAX(id) FROM dead_letters) - %s"""
DEAD_LETTER_BYTES = "SELECT COALESCE(SUM(octet_length(raw)), 0) FROM dead_letters"
# The oldest rows whose raw bytes add up to at least %s: the last one's id and the sum.
OLDEST_DEAD_LETTERS_UP_TO_BYTES = """SELECT id, running FROM (
        SELECT id, SUM(COALESCE(octet_length(raw), 0)) OVER (ORDER BY id) AS running FROM dead_letters
    ) AS sizes WHERE running >= %s ORDER BY id LIMIT 1"""
ALL_DEAD_LETTERS_AND_BYTES = "SELECT MAX(id), COALESCE(SUM(octet_length(raw)), 0) FROM dead_letters"
TRIM_DEAD_LETTERS_UP_TO = "DELETE FROM dead_letters WHERE id <= %s"

ADD_TO_COUNTER = """INSERT INTO counters (name, value) VALUES (%s, %s)
    ON CONFLICT (name) DO UPDATE SET value = counters.value + EXCLUDED.value"""

# Task logs (protocol/task_logs.py decides where lines go; these read and write them here).
SELECT_LOGS = "SELECT logs::text FROM task_executions WHERE id = %s"
SET_LOGS = "UPDATE task_executions SET logs = CAST(%s AS jsonb), last_updated = %s WHERE id = %s"
TOUCH_TASK = "UPDATE task_executions SET last_updated = %s WHERE id = %s"
LAST_LINE_NO = "SELECT MAX(line_no) FROM task_log_lines WHERE task_id = %s"
INSERT_LINE = "INSERT INTO task_log_lines (task_id, line_no, line) VALUES (%s, %s, %s)"


@dataclass(frozen=True)
class PostgresStatement:
    """One operation's SQL for psycopg (`%s` placeholders) and how to take its parameters from
    the SQLite statement's tuple: parameter i is `params[order[i]]`."""

    sql: str
    order: tuple[int, ...]
    identity: bool  # order is 0, 1, 2, ...: the tuple is used as it is
    must_change_a_row: bool
    json_positions: tuple[int, ...]  # positions in the SQLite tuple of the parameters bound into jsonb

    def params(self, sqlite_params: tuple[object, ...]) -> tuple[object, ...]:
        """The parameters of this statement from the SQLite statement's tuple."""
        if self.identity:
            return sqlite_params
        return tuple(sqlite_params[i] for i in self.order)


_NAMED = re.compile(r":([a-z_]+)")


def _translate(sqlite: statements.Statement, sql: str) -> PostgresStatement:
    names = _NAMED.findall(sql)
    missing = set(names) - set(sqlite.names)
    if missing:
        raise ValueError(f"PostgreSQL statement names parameters the SQLite one lacks: {sorted(missing)}")
    order = tuple(sqlite.names.index(name) for name in names)
    return PostgresStatement(
        sql=_NAMED.sub("%s", sql),
        order=order,
        identity=order == tuple(range(len(sqlite.names))),
        must_change_a_row=sqlite.must_change_a_row,
        json_positions=tuple(i for i, name in enumerate(sqlite.names) if name in JSON_PARAMETERS),
    )


def _compile() -> dict[str, PostgresStatement]:
    """SQLite SQL text -> its PostgreSQL statement, for every statement in statements.COMPILED."""
    compiled: dict[str, PostgresStatement] = {}
    for (name, status), sqlite in statements.COMPILED.items():
        if status is None:
            sql = INSERTS[name]
        else:
            table = "workflow_executions" if name == UPDATE_WORKFLOW_STATUS else "task_executions"
            sql = _status_update(table, Status(status), with_output=name == UPDATE_TASK_STATUS)
        compiled[sqlite.sql] = _translate(sqlite, sql)
    return compiled


COMPILED: dict[str, PostgresStatement] = _compile()
"""The PostgreSQL form of each statement the writer binds, keyed by the SQLite statement's SQL."""


def for_statement(sqlite: statements.Statement) -> PostgresStatement:
    """The PostgreSQL form of `sqlite` (a statement of statements.COMPILED)."""
    return COMPILED[sqlite.sql]


@dataclass(frozen=True)
class CopyForm:
    """A plain INSERT of statements.COMPILED as COPY ... FROM STDIN, for long runs of it.

    `values` gives each column's value: an int is a position in the SQLite statement's
    parameter tuple, anything else (in a 1-tuple) a constant the INSERT writes literally.
    """

    sql: str
    values: tuple[int | tuple[object], ...]

    def row(self, sqlite_params: tuple[object, ...]) -> tuple[object, ...]:
        """The COPY row of one operation, from the SQLite statement's tuple."""
        return tuple(sqlite_params[v] if isinstance(v, int) else v[0] for v in self.values)


_INSERT = re.compile(
    r"^\s*INSERT INTO (?P<table>\w+)\s*\((?P<columns>[^()]*)\)\s*VALUES\s*\((?P<values>[^()]*)\)\s*$",
    re.DOTALL,
)
_CONSTANT_TEXT = re.compile(r"^'([^']*)'$")


def _copy_form(sqlite: statements.Statement, sql: str) -> CopyForm:
    """The COPY form of an INSERT whose values are parameters and constants only."""
    match = _INSERT.match(sql)
    if match is None:
        raise ValueError(f"not a plain INSERT: {' '.join(sql.split())[:80]}")
    columns = [c.strip() for c in match.group("columns").split(",")]
    values: list[int | tuple[object]] = []
    for value in (v.strip() for v in match.group("values").split(",")):
        text = _CONSTANT_TEXT.match(value)
        if value.startswith(":"):
            values.append(sqlite.names.index(value[1:]))
        elif text is not None:
            values.append((text.group(1),))
        elif value.isdigit():
            values.append((int(value),))
        else:
            raise ValueError(f"no COPY form for the value {value!r} of {match.group('table')}")
    if len(columns) != len(values):
        raise ValueError(f"{match.group('table')}: {len(columns)} columns, {len(values)} values")
    return CopyForm(f"COPY {match.group('table')} ({', '.join(columns)}) FROM STDIN", tuple(values))


COPY_FORMS: dict[str, CopyForm] = {
    statements.COMPILED[(name, None)].sql: _copy_form(statements.COMPILED[(name, None)], INSERTS[name])
    for name in (CREATE_WORKFLOW, CREATE_TASK, AUDIT_EVENT)
}
"""SQLite SQL text -> the COPY form of that INSERT, for the inserts COPY can do (no ON CONFLICT)."""


# -- retention: prune jobs (writer/retention.py runs them; writer/pg_retention.py wires these) --

_CHUNK_IDS_SQLITE = "SELECT value FROM json_each(?)"
_CHUNK_IDS = "SELECT jsonb_array_elements_text(CAST(%s AS jsonb))"


def prune_statement(sqlite_sql: str) -> str:
    """One prune statement of protocol/statements.py on PostgreSQL.

    The chunk's ids, one JSON array parameter, are read with jsonb_array_elements_text where
    SQLite has json_each; a row found by its rowid is found by its ctid (the physical row
    version, which a DELETE in the same statement may use); `?` becomes `%s`. None of these
    statements has a `?` or a `rowid` inside a literal.
    """
    return sqlite_sql.replace(_CHUNK_IDS_SQLITE, _CHUNK_IDS).replace("rowid", "ctid").replace("?", "%s")


UNFINISHED_PRUNE_JOB = statements.UNFINISHED_PRUNE_JOB.replace(
    "SELECT id, older_than,",
    """SELECT id, to_char(older_than AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),""",
)
"""The oldest unfinished job, its cutoff as the RFC 3339 text SQLite holds (the report quotes it)."""


# -- the writer's published counters (writer/pg_metrics.py; writer/metrics.py on SQLite) --

SET_COUNTERS = """INSERT INTO counters (name, value)
    SELECT * FROM unnest(CAST(%s AS text[]), CAST(%s AS bigint[]))
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"""
"""Set every counter of two parallel arrays (names, values) in one statement: the writer
publishes about 60 of them a second, and one statement is one round trip whether or not the
driver pipelines."""
