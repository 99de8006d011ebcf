"""Starting a background writer for a Client that asked for one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("see_persistence.client")


def writer_log_path(db_path: Path) -> Path:
    """Where a spawned writer writes its log: beside the database."""
    return db_path.with_name(db_path.name + ".writer.log")


def spawn_writer(db_path: Path) -> subprocess.Popen[bytes]:
    """Start `see-persistence writer --db PATH` detached from this process's session.

    Several clients racing to spawn are safe: the writers race for the lease, one wins, and
    the others exit with code 3 at once.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = writer_log_path(db_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "see_persistence", "writer", "--db", str(db_path), "--quiet-if-held"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    log.info("spawned a writer (pid %d) for %s; its log is %s", process.pid, db_path, log_path)
    return process
