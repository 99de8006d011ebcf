"""Prune jobs on PostgreSQL: writer/retention.py's jobs and chunks, with PostgreSQL's SQL.

The rules are retention.py's, unchanged (a prune only records its job in its batch; the writer
deletes in short fenced transactions between batches, resumes an unfinished job after a
takeover, and writes the report event once); only the statements differ
(statements_postgresql.prune_statement), and which errors are the database's.
"""

from __future__ import annotations

from ..protocol import statements
from ..protocol import statements_postgresql as pgsql
from .retention import PruneStatements

POSTGRESQL_PRUNE = PruneStatements(
    record=pgsql.prune_statement(statements.RECORD_PRUNE_JOB),
    unfinished=pgsql.UNFINISHED_PRUNE_JOB,
    count_chunk=pgsql.prune_statement(statements.COUNT_PRUNE_CHUNK),
    job_counts=pgsql.prune_statement(statements.PRUNE_JOB_COUNTS),
    finish=pgsql.prune_statement(statements.FINISH_PRUNE_JOB),
    give_up=pgsql.prune_statement(statements.GIVE_UP_PRUNE_JOB),
    report=pgsql.prune_statement(statements.PRUNE_REPORT),
    chunk_workflows=lambda status_count: pgsql.prune_statement(
        statements.prune_chunk_workflows(status_count)
    ),
    child_deletes=tuple(
        (table, pgsql.prune_statement(delete)) for table, delete in statements.PRUNE_CHILD_DELETES
    ),
    prune_workflows=pgsql.prune_statement(statements.PRUNE_WORKFLOWS),
)


def is_environmental(exc: BaseException) -> bool:
    """True for a fault of the database (connection, resources), not of what a chunk deletes."""
    import psycopg

    from .pg_batch import is_statement_error  # here: pg_batch imports this module

    return isinstance(exc, psycopg.Error) and not is_statement_error(exc)


def is_busy(exc: BaseException) -> bool:
    """True when a lock held by another session stopped the chunk (a lock timeout or deadlock)."""
    from psycopg import errors

    return isinstance(exc, (errors.LockNotAvailable, errors.DeadlockDetected))
