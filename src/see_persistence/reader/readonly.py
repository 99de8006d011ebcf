"""What "read-only" means for raw SQL: an sqlite3 authorizer that lets a statement read and nothing else."""

from __future__ import annotations

import sqlite3
import sys

# What a statement may do: read, call functions, and run the pragmas that only report.
# Everything else (writes, ATTACH, pragmas that set) is refused by SQLite itself through the
# authorizer, before the statement runs.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, 33}
)  # 33: RECURSIVE
# Pragmas whose argument names a table or a count, and that only ever report.
_REPORTING_PRAGMAS_WITH_ARGUMENT = frozenset(
    {
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
# Pragmas that report when given no argument (with one, several of them would set).
_REPORTING_PRAGMAS = frozenset(
    {
        "database_list",
        "compile_options",
        "user_version",
        "schema_version",
        "page_count",
        "page_size",
        "freelist_count",
        "journal_mode",
        "collation_list",
        "function_list",
        "table_list",
        "data_version",
        "encoding",
        "foreign_keys",
        "synchronous",
    }
)


def _is_read_only_action(action: int, arg1: str | None, arg2: str | None) -> bool:
    if action in _READ_ACTIONS:
        return True
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None:
        pragma = arg1.lower()
        return pragma in _REPORTING_PRAGMAS_WITH_ARGUMENT or (pragma in _REPORTING_PRAGMAS and arg2 is None)
    return False


class ReadOnlyAuthorizer:
    """An sqlite3 authorizer that denies every action but reading, and remembers what it denied."""

    def __init__(self) -> None:
        self.denied: list[int] = []

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if _is_read_only_action(action, arg1, arg2):
            return sqlite3.SQLITE_OK
        self.denied.append(action)
        return sqlite3.SQLITE_DENY


def _allow_everything(*args: object) -> int:
    return sqlite3.SQLITE_OK


def clear_authorizer(conn: sqlite3.Connection) -> None:
    """Remove the authorizer from `conn`, so its next statements run unchecked again."""
    # Python 3.10 cannot clear an authorizer (None is taken as a callback that fails, which
    # denies every later statement); an authorizer that allows everything does the same.
    if sys.version_info >= (3, 11):
        conn.set_authorizer(None)
    else:
        conn.set_authorizer(_allow_everything)


_SQLITE_READONLY = 8  # the primary result code; sqlite3 exports it only from Python 3.11


def is_read_only_error(exc: sqlite3.DatabaseError) -> bool:
    """True if SQLite refused `exc`'s statement because the connection is read-only."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    return code is not None and code & 0xFF == _SQLITE_READONLY
