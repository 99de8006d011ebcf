"""tools/wal_index.py reads the WAL's length without dropping this process's SQLite locks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS) not in sys.path:
    sys.path.append(str(TOOLS))  # appended: nothing in tools/ may shadow an installed module

import wal_index  # noqa: E402

# Another process asks for a TRUNCATE checkpoint: it must report busy (1) while a reader of
# this process holds its snapshot, and it can only do that if the reader's lock on -shm holds.
CHECKPOINT = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)\n"
    "print(conn.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])\n"
)


def _checkpoint_busy(db: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHECKPOINT, str(db)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_reading_the_wal_index_keeps_a_reader_s_locks_and_gives_the_length(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)  # the snapshot is held now
    writer.execute("INSERT INTO t VALUES (2)")

    for _ in range(3):  # before the fix, each read opened and closed -shm: the locks went with it
        length = wal_index.read(db)
        assert length is not None and length.frames > 0 and length.page_size == 4096
    assert _checkpoint_busy(db) == 1, "the reader's lock on -shm was dropped"
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)

    reader.execute("COMMIT")
    assert _checkpoint_busy(db) == 0
    assert wal_index.read(db) == wal_index.WalLength(0, 4096)  # the WAL starts over after it
    reader.close()
    writer.close()
