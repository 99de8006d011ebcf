"""Opening SQLite connections the way every part of the layer needs them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

BUSY_TIMEOUT_MS = 5000
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


# Primary result codes that say the database or the machine failed, not one batch's contents:
# BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_ENVIRONMENT_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def is_environmental(exc: sqlite3.Error) -> bool:
    """True if `exc` is a fault of the database or the machine (disk full, I/O, locked), which
    retrying may get past, rather than of what was being written. Unknown (Python 3.10): True."""
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return False  # raised by the sqlite3 module itself: a value it cannot bind, say
    code = getattr(exc, "sqlite_errorcode", None)
    return code is None or code & 0xFF in _ENVIRONMENT_CODES


def is_busy(exc: sqlite3.Error) -> bool:
    """True if `exc` says another connection holds a lock we need (SQLITE_BUSY / LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return str(exc).startswith("database is locked")  # Python 3.10 has no sqlite_errorcode


def open_read_only(db_path: Path) -> sqlite3.Connection:
    """Open `db_path` read-only (mode=ro), in autocommit so no read transaction lingers.

    Raises FileNotFoundError naming the path when the file does not exist yet. An open read
    transaction would pin the WAL and starve checkpoints, so callers fetch and let go.
    """
    if not db_path.exists():
        raise FileNotFoundError(f"no see-persistence database at {db_path} (has a writer run yet?)")
    uri = f"file:{quote(str(db_path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    return conn
