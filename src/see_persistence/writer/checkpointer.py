"""WAL checkpoints on a thread of their own, so that no commit waits for one.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: it copies
the WAL into the database file and syncs both, which made one commit in a hundred take
milliseconds instead of a fraction of one (measured: a 10-operation commit p99 4.8 ms with
the automatic checkpoint every 1000 pages, 0.6 ms without). This thread runs PASSIVE
checkpoints on a second connection instead: PASSIVE never waits for readers or for the
writer, and SQLite releases the GIL while it copies and syncs.

It cannot replace the automatic checkpoint altogether: the WAL starts over from its
beginning only at a write that finds every frame copied, and a busy writer always appends
while this thread copies, so the WAL grew without end (576 MB in 16 s of flooding). The
writer keeps SQLite's own checkpoint at WAL_RESTART_PAGES, sixteen times SQLite's default;
by then this thread has copied nearly everything, so that checkpoint mostly syncs, and the
next commit starts the WAL over.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import psutil

from .storage import open_write_connection
from .wal_locks import wal_reader_pids

log = logging.getLogger("see_persistence.writer")

CHECKPOINT_INTERVAL_S = 0.1  # at most this long between a commit and the checkpoint after it
WAL_RESTART_PAGES = 16_000  # the writer's own automatic checkpoint: the WAL's length, about 64 MB
# Past this many frames not yet copied, someone keeps the WAL from starting over: another
# connection's read transaction left open (a statement never reset). The writer cannot end
# it; it says so, naming who is reading, at most once per PINNED_WAL_LOG_INTERVAL_S.
PINNED_WAL_WARN_FRAMES = 4 * WAL_RESTART_PAGES
PINNED_WAL_LOG_INTERVAL_S = 60.0


def _describe(pid: int) -> str:
    """'pid 1234 (name)', or just the pid if it cannot be looked at."""
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


class Checkpointer:
    """Checkpoints the WAL every CHECKPOINT_INTERVAL_S while commits happen; `stop()` ends it."""

    def __init__(self, db_path: Path, synchronous: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._conn = open_write_connection(db_path, synchronous)
        self._db_path = db_path
        self._next_pinned_warning = 0.0
        self._interval_s = interval_s
        self._commits = 0  # written by the writer's thread, read here: a hint, not a count
        self._seen = 0
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="see-persistence-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """Note that the writer committed: the WAL has grown."""
        self._commits += 1

    def stop(self) -> None:
        """Run a last checkpoint, end the thread and close its connection."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        if not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._commits != self._seen:
                self._seen = self._commits
                self._checkpoint()
        self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            _busy, wal_frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if wal_frames - copied > PINNED_WAL_WARN_FRAMES:
                self._warn_pinned(wal_frames, copied)
        except sqlite3.Error as exc:
            if not self._failing:  # once per run of failures: a full disk would repeat it forever
                log.error("WAL checkpoint failed (will retry): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("WAL checkpoints succeed again")
        self._failing = False

    def _warn_pinned(self, wal_frames: int, copied: int) -> None:
        now = time.monotonic()
        if now < self._next_pinned_warning:
            return
        self._next_pinned_warning = now + PINNED_WAL_LOG_INTERVAL_S
        readers = wal_reader_pids(self._db_path)
        others = sorted((readers or frozenset()) - {os.getpid()})
        who = (
            "processes in a read transaction now: " + ", ".join(_describe(pid) for pid in others)
            if others
            else "no process is in a read transaction at this moment"
        )
        log.warning(
            "the WAL holds %d frames of which only %d could be copied into the database: a connection"
            " keeps an old read transaction open, so the WAL cannot start over and grows (%s)",
            wal_frames,
            copied,
            who,
        )
