"""How the PostgreSQL writer should insert a batch: pipelined executemany, or COPY?

Inserts the same rows into workflow_executions of a scratch database, in transactions of
--batch rows, three ways: the writer's INSERT by executemany (psycopg pipelines it: every row
sent, then one sync), COPY FROM STDIN with the same values, and one execute per row as the
baseline. Each way runs --rounds times on a fresh table; the median rows/s is printed.

    python tools/bench_pg_inserts.py --url postgresql://me@/scratch?host=/run/postgresql

The database must be one you can throw away: the script creates its schema there and
truncates workflow_executions between rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from see_persistence.protocol import statements, timestamps
from see_persistence.protocol import statements_postgresql as pgsql
from see_persistence.protocol.operations import CREATE_WORKFLOW
from see_persistence.writer.pg_storage import upgrade_schema

COPY_SQL = (
    "COPY workflow_executions (id, workflow_name, status, created_at, metadata, instance_id, last_updated)"
    " FROM STDIN"
)


def rows(count: int) -> list[tuple[Any, ...]]:
    """`count` create_workflow parameter tuples, as the writer binds them."""
    now = timestamps.format_us(time.time_ns() // 1000)
    instance = str(uuid.uuid4())
    return [
        (str(uuid.uuid4()), f"wf {n}", now, '{"branch": "main", "n": 1}', instance, now) for n in range(count)
    ]


def by_executemany(conn: psycopg.Connection[Any], batch: list[tuple[Any, ...]]) -> None:
    """The writer's way."""
    sql = pgsql.for_statement(statements.COMPILED[(CREATE_WORKFLOW, None)]).sql
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(sql, batch)


def by_copy(conn: psycopg.Connection[Any], batch: list[tuple[Any, ...]]) -> None:
    """COPY of the same values (status 'pending' added, as the INSERT's literal)."""
    with conn.transaction(), conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        for wid, name, at, metadata, instance, now in batch:
            copy.write_row((wid, name, "pending", at, metadata, instance, now))


def by_execute(conn: psycopg.Connection[Any], batch: list[tuple[Any, ...]]) -> None:
    """One statement, one round trip, per row: the baseline."""
    sql = pgsql.for_statement(statements.COMPILED[(CREATE_WORKFLOW, None)]).sql
    with conn.transaction(), conn.cursor() as cursor:
        for params in batch:
            cursor.execute(sql, params)


def measure(
    conn: psycopg.Connection[Any], way: Callable[..., None], total: int, batch: int, rounds: int
) -> float:
    """Median rows/s of `way` over `rounds` runs of `total` rows in transactions of `batch`."""
    rates = []
    for _ in range(rounds):
        conn.execute("TRUNCATE workflow_executions CASCADE")
        data = rows(total)
        started = time.perf_counter()
        for start in range(0, total, batch):
            way(conn, data[start : start + batch])
        rates.append(total / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    """Parse the arguments, run the three ways, print rows/s."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with psycopg.connect(args.url, autocommit=True) as conn:
        upgrade_schema(conn, time.time_ns() // 1000)
        for name, way in (("executemany", by_executemany), ("copy", by_copy), ("execute", by_execute)):
            rate = measure(conn, way, args.rows, args.batch, args.rounds)
            print(f"{name:12s} {rate:10,.0f} rows/s  ({args.rows} rows in transactions of {args.batch})")


if __name__ == "__main__":
    main()
