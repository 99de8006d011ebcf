"""The PostgreSQL writer's connection and schema: psycopg 3, autocommit with explicit
transactions, the tables of protocol/schema_postgresql.py created and upgraded under a
transaction-level advisory lock.

Autocommit, with every transaction opened by `conn.transaction()`: a standby that only
looks at the lease row must not sit in an open transaction between looks (psycopg, like
Python's sqlite3, otherwise begins one implicitly on the first statement).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg

from ..backends import redact_url
from ..protocol import schema, schema_postgresql, timestamps

log = logging.getLogger("see_persistence.writer")

# Advisory lock keys, in PostgreSQL's one 64-bit key space of the database (advisory locks of
# different databases never meet). Fixed values: every writer of every version must agree.
SCHEMA_LOCK_KEY = 0x5345455F53434845  # "SEE_SCHE": held (per transaction) while creating/upgrading
WRITER_LOCK_KEY = 0x5345455F57524954  # "SEE_WRIT": held (per session) by the one writer

APPLICATION_NAME = "see-persistence writer"
"""With " pid N" after it: an operator (or a test) tells the writers' sessions apart in pg_stat_activity."""
CONNECT_TIMEOUT_S = 10
# TCP keepalives, so that a connection to a server that vanished (its host off the network)
# is seen broken within about 20 s instead of the kernel's two hours; unix sockets ignore them.
KEEPALIVE_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}


def connect(url: str) -> psycopg.Connection[Any]:
    """Open an autocommit connection to `url` for the writer; errors name the URL without its password."""
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            application_name=f"{APPLICATION_NAME} pid {os.getpid()}",
            connect_timeout=CONNECT_TIMEOUT_S,
            **KEEPALIVE_OPTIONS,
        )
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise psycopg.OperationalError(f"cannot connect to {redact_url(url)}: {first}") from None


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The highest version recorded in schema_version (0 for a database without the table)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(found[0] or 0) if found else 0


def upgrade_schema(conn: psycopg.Connection[Any], now_us: int) -> int:
    """Create or upgrade the schema to SCHEMA_VERSION in one transaction; return the version found.

    Looks first without a lock (the usual start, on an up-to-date database, takes none);
    then, under a transaction-level advisory lock, looks again and runs what is missing, so
    that two writers starting at once never both create (CREATE TABLE IF NOT EXISTS is not
    safe against a concurrent one on PostgreSQL: the loser fails on pg_type's unique index).
    """
    found = schema_version(conn)
    if found >= schema.SCHEMA_VERSION:
        _add_postgresql_only(conn)
        return found
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        found = schema_version(conn)
        if found >= schema.SCHEMA_VERSION:
            _add_postgresql_only(conn)  # its own transaction: this one only held the lock
            return found  # another writer did it while this one waited for the lock
        log.info("upgrading the PostgreSQL schema from version %d to %d", found, schema.SCHEMA_VERSION)
        for statement in schema_postgresql.upgrade_statements(found):
            conn.execute(statement)
        conn.execute(
            schema_postgresql.version_row_statement(),
            (schema.SCHEMA_VERSION, timestamps.format_us(now_us)),
        )
    log.info("PostgreSQL schema upgraded from version %d to %d", found, schema.SCHEMA_VERSION)
    return found


def _add_postgresql_only(conn: psycopg.Connection[Any]) -> None:
    """Add what is missing of schema_postgresql.POSTGRESQL_ONLY to an up-to-date database.

    A database created before those additions has the version number already; looking at the
    catalog (one query, no lock) is what tells.
    """
    row = conn.execute(schema_postgresql.missing_additions_query()).fetchone()
    if not row or not row[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        log.info("adding the PostgreSQL-only columns and indexes")
        for statement in schema_postgresql.POSTGRESQL_ONLY:
            conn.execute(statement)
