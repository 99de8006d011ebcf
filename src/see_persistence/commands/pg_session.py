"""Connections the commands open to a PostgreSQL server themselves (query, migrate).

The Reader keeps its pool to itself; a command that streams rows, needs the cursor's column
names or holds one snapshot for minutes opens its own session, configured so that values
arrive as the Reader gives them: timestamptz as the writer's RFC 3339 text in UTC, json and
jsonb as their text, booleans as bool.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import TextLoader

from ..backends import DatabaseURL
from ..reader.postgresql import Rfc3339Loader

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "see-persistence"


def connect(database: DatabaseURL, *, read_only: bool, purpose: str) -> psycopg.Connection[Any]:
    """A session on `database` in UTC, values loaded as the Reader loads them.

    `read_only` sessions refuse writes in every transaction (default_transaction_read_only).
    Not autocommit: the caller's first statement begins a transaction, which it ends.
    Errors name the URL without its password.
    """
    given = conninfo_to_dict(database.url)
    options = "-c TimeZone=UTC" + (" -c default_transaction_read_only=on" if read_only else "")
    if given.get("options"):
        options = f"{given['options']} {options}"
    extra: dict[str, Any] = {"options": options, "application_name": f"{APPLICATION_NAME} {purpose}"}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        conn = psycopg.connect(database.url, **extra)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise psycopg.OperationalError(f"cannot connect to {database}: {first}") from None
    conn.adapters.register_loader("timestamptz", Rfc3339Loader)
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)
    return conn
