"""Reads on PostgreSQL: each Reader query beside the same SQL through raw psycopg (issue 17).

The data set is reads.py's SQLite read database (built, or reused from --read-cache), copied row
for row into a new PostgreSQL database with the layer's schema (protocol/schema_postgresql.py),
then ANALYZEd; the queries, their arguments and the timing are reads.py's. The raw side is one
psycopg connection in autocommit with psycopg's own loaders, running the SQL the Reader sends
(its `?` placeholders as `%s`, its nullable sort columns with SQLite's NULL order): the ratio is
what the Reader adds (pool, read-only session, models), not a difference of plans.

The server: `--postgresql-url URL` (a database on it where this user may CREATE DATABASE; a
database `see_bench_reads_<random>` is made there and dropped after), else a throwaway cluster
started as the tests start theirs (tests/postgres_server.py: a unix socket in a temporary
directory, fsync off). `python tools/bench.py --only reads-postgresql --read-workflows 20000`.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .databases import open_raw_read_only
from .reads import Reads, _read_db, measure_reads, sample_arguments
from .settings import ROOT, Settings

log = logging.getLogger("bench")

COPIED_TABLES = ("workflow_executions", "task_executions", "audit_events")
BOOLEAN_COLUMNS = frozenset({"success"})


# What a throwaway cluster made `durable` runs with: what a user's server runs with by default
# (the test suite's cluster turns all three off, for speed).
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
DURABLE_RELOAD_TIMEOUT_S = 30.0


def _make_durable(url: str) -> None:
    """ALTER SYSTEM to DURABLE_SETTINGS on a throwaway cluster, then wait until new sessions run with them."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        for name, value in DURABLE_SETTINGS.items():
            admin.execute(f"ALTER SYSTEM SET {name} = {value}")
        admin.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + DURABLE_RELOAD_TIMEOUT_S
    while True:  # the postmaster applies the reload on its own time: look from new sessions
        with psycopg.connect(url, autocommit=True) as check:
            if all(
                check.execute(f"SHOW {name}").fetchone() == (value,)
                for name, value in DURABLE_SETTINGS.items()
            ):
                return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"the cluster did not take {DURABLE_SETTINGS} within {DURABLE_RELOAD_TIMEOUT_S} s"
            )
        time.sleep(0.05)


@contextmanager
def _server(settings: Settings, *, durable: bool = False) -> Iterator[str]:
    """A URL of a database on a server where a database can be made: the one given, or a new cluster.

    `durable`: a new cluster runs with DURABLE_SETTINGS (a server given by URL is left as it is).
    """
    if settings.postgresql_url:
        yield settings.postgresql_url
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from postgres_server import PostgresServer, find_binaries
    finally:
        sys.path.remove(str(ROOT / "tests"))
    server = PostgresServer(find_binaries())
    try:
        server.start()
        log.info("started a throwaway PostgreSQL %d cluster in %s", server.binaries.major, server.root)
        if durable:
            _make_durable(server.url())
        yield server.url()
    finally:
        server.stop()


@contextmanager
def _new_database(server_url: str, prefix: str = "see_bench_reads_") -> Iterator[str]:
    """A new, empty database on the server of `server_url`, dropped at the end."""
    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_read_database(db: Path, url: str) -> None:
    """The layer's schema in the database at `url`, then every row of COPIED_TABLES from `db`."""
    import psycopg

    from see_persistence.protocol import schema, schema_postgresql
    from see_persistence.protocol.timestamps import format_us

    source = open_raw_read_only(db)
    try:
        with psycopg.connect(url) as conn:
            with conn.transaction():
                for statement in schema_postgresql.upgrade_statements(0):
                    conn.execute(statement)
                conn.execute(
                    schema_postgresql.version_row_statement(),
                    (schema.SCHEMA_VERSION, format_us(time.time_ns() // 1000)),
                )
                for table in COPIED_TABLES:
                    columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
                    booleans = [i for i, name in enumerate(columns) if name in BOOLEAN_COLUMNS]
                    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in source.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                            if booleans:
                                values = list(row)
                                for i in booleans:
                                    values[i] = None if values[i] is None else bool(values[i])
                                row = tuple(values)
                            copy.write_row(row)
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
    finally:
        source.close()


def run_reads_postgresql(settings: Settings) -> Reads:
    """reads.py's queries on PostgreSQL: the Reader beside raw psycopg, on the same copied rows."""
    import psycopg

    from see_persistence import Reader
    from see_persistence.reader.postgresql_sql import qmark_to_psycopg, sqlite_null_order

    db, reads = _read_db(settings)
    reads.title = "Reads on PostgreSQL"
    reads.baseline = "raw psycopg"
    source = open_raw_read_only(db)

    def sqlite_fetch(sql: str, params: Sequence[Any]) -> list[Any]:
        return source.execute(sql, params).fetchall()

    try:
        arguments = sample_arguments(sqlite_fetch, reads)
    finally:
        source.close()
    with _server(settings) as server_url, _new_database(server_url) as url:
        started = time.monotonic()
        copy_read_database(db, url)
        log.info("copied the read database into PostgreSQL in %.1f s", time.monotonic() - started)
        reads.build_s += time.monotonic() - started
        reader = Reader(url)
        raw = psycopg.connect(url, autocommit=True)
        translated: dict[str, str] = {}

        def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
            pg_sql = translated.get(sql)
            if pg_sql is None:
                pg_sql = translated[sql] = qmark_to_psycopg(sqlite_null_order(sql))
            return raw.execute(pg_sql, params).fetchall()

        try:
            measure_reads(reads, reader, fetch, arguments, settings)
        finally:
            reader.close()
            raw.close()
    return reads
