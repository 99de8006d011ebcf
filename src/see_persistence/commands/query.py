"""`see-persistence query "SQL"`: read-only SQL, printed as a table, JSON lines or CSV."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..database import open_read_only
from .base import Command, CommandError
from .common import describe_sqlite_error, is_server, open_database
from .output import write_csv, write_json_lines, write_table

if TYPE_CHECKING:
    from ..backends import DatabaseURL

log = logging.getLogger("see_persistence.cli.query")

FETCH_ROWS = 500  # rows fetched at a time when streaming JSON or CSV


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the query command's arguments."""
    parser.add_argument(
        "sql", metavar="SQL", help="one read-only SQL statement (SELECT, WITH, reporting PRAGMAs)"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="VALUE",
        help="a value for the next ? placeholder, as text (repeat for several)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per row (bytes as hex)")
    form.add_argument("--csv", action="store_true", help="CSV with a header row")


def _refused(exc: BaseException) -> CommandError:
    return CommandError(f"refused: query runs read-only SQL only ({exc})")


def _rows(cursor: sqlite3.Cursor) -> Iterator[tuple[object, ...]]:
    while True:
        chunk = cursor.fetchmany(FETCH_ROWS)
        if not chunk:
            return
        yield from chunk


def _print(columns: list[str], rows: Iterator[tuple[Any, ...]], args: argparse.Namespace) -> None:
    if args.json:
        write_json_lines(columns, rows)
    elif args.csv:
        write_csv(columns, rows)
    else:
        table = list(rows)  # the widths need every row
        write_table(columns, table)
        print(f"({len(table)} row{'' if len(table) == 1 else 's'})")
    sys.stdout.flush()


def _server_value(value: Any) -> Any:
    """A value of PostgreSQL's that text, JSON and CSV can show: numeric, dates, uuids... as text."""
    if value is None or isinstance(value, (str, int, float, bytes)):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    return str(value)


def _run_on_server(database: DatabaseURL, args: argparse.Namespace) -> int:
    """The statement in a READ ONLY transaction of a session of its own, streamed by a server cursor."""
    import psycopg

    from ..reader.postgresql_sql import user_statement
    from .pg_session import connect

    open_database(database).close()  # one-line refusal of a server that refuses, or a foreign database
    sql, params = user_statement(args.sql, args.param)
    conn = connect(database, read_only=True, purpose="query")
    try:
        cursor = conn.execute(sql, params, prepare=True)  # one statement only, as Reader.query
        columns = [d.name for d in cursor.description or ()]
        if not columns:
            log.debug("the statement returned no columns")
            return 0

        def rows() -> Iterator[tuple[Any, ...]]:
            while chunk := cursor.fetchmany(FETCH_ROWS):
                yield from (tuple(_server_value(v) for v in row) for row in chunk)

        _print(columns, rows(), args)
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise _refused(exc) from None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"SQL error: {first}") from None
    finally:
        conn.close()  # never committed: the transaction ends with the session
    return 0


def run(args: argparse.Namespace) -> int:
    """Run one read-only statement and print its result."""
    if is_server(args.db):
        return _run_on_server(args.db, args)
    # The very authorizer Reader.query installs: one definition of "read-only" for the library
    # and the command; our own connection streams rows and keeps the cursor's column names.
    # Imported here, so that the writer command never loads the record models.
    from ..reader.readonly import ReadOnlyAuthorizer, is_read_only_error

    open_database(args.db).close()  # one-line refusal of a missing or foreign file first
    conn = open_read_only(args.db)
    authorizer = ReadOnlyAuthorizer()
    conn.set_authorizer(authorizer)
    try:
        cursor = conn.execute(args.sql, args.param)
        columns = [d[0] for d in cursor.description or ()]
        if not columns:
            log.debug("the statement returned no columns")
            return 0
        if args.json:
            write_json_lines(columns, _rows(cursor))
        elif args.csv:
            write_csv(columns, _rows(cursor))
        else:
            rows = cursor.fetchall()  # the widths need every row
            write_table(columns, rows)
            print(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
        sys.stdout.flush()
    except sqlite3.DatabaseError as exc:
        if authorizer.denied or is_read_only_error(exc):
            raise _refused(exc) from None
        raise CommandError(f"SQL error: {describe_sqlite_error(exc)}") from None
    except (sqlite3.Error, sqlite3.Warning) as exc:  # e.g. two statements at once
        raise CommandError(f"SQL error: {exc}") from None
    finally:
        conn.close()
    return 0


COMMAND = Command(
    name="query",
    description="Run one read-only SQL statement on a read-only connection and print its rows: an "
    "aligned table by default, JSON lines or CSV on request. Statements that write, ATTACH, or set "
    "pragmas are refused before they run (exit code 1).",
    examples=(
        'see-persistence query "SELECT status, COUNT(*) AS n FROM workflow_executions GROUP BY status"',
        'see-persistence query --csv "SELECT * FROM audit_events WHERE event_type = ?" -p prune',
        'see-persistence query --json "PRAGMA table_info(task_executions)"',
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
