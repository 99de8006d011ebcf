"""Opening SQLite connections the way every part of the layer needs them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

BUSY_TIMEOUT_MS = 5000


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
