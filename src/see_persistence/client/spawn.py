"""Starting a background writer for a Client that asked for one, once per need, backing off
when it cannot start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from .. import locations

log = logging.getLogger("see_persistence.client")

SPAWN_MIN_INTERVAL_S = 2.0  # between two spawns while no writer serves
SPAWN_BACKOFF_MAX_S = 60.0  # a writer that keeps failing to start is tried this rarely
# A spawned writer leaves once no live GUI instance has been seen for this long, so that it
# does not outlive the desktop session that needed it (a supervisor's writer never does).
SPAWNED_WRITER_IDLE_EXIT_S = 30.0
# Exit codes of `see-persistence writer` that are no failure to start: a clean stop (it went
# idle) and "another live writer holds the lease" (a race between spawning clients).
_NOT_A_FAILURE = frozenset({0, 3})
_LOG_TAIL_BYTES = 4096


def writer_log_path(db_path: Path) -> Path:
    """Where a spawned writer writes its log: beside the database."""
    return db_path.with_name(db_path.name + ".writer.log")


def spawn_writer(db_path: Path, keys_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `see-persistence writer --db PATH` detached from this process's session.

    `keys_dir` is the client's own key directory when it was given one: a writer listening on
    TCP must find the client's key on the allow-list of that directory, not of the default.

    Several clients racing to spawn are safe: the writers race for the lease, one wins, and
    the others exit with code 3 at once. Raises OSError if the log file cannot be opened
    (e.g. the database's directory does not exist and is not the default location's).
    """
    if db_path.parent == locations.resolve_db_path(locations.DEFAULT_DB_PATH).parent:
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = writer_log_path(db_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "see_persistence",
                "writer",
                "--db",
                str(db_path),
                "--quiet-if-held",
                "--exit-when-idle",
                str(SPAWNED_WRITER_IDLE_EXIT_S),
                *(["--keys-dir", str(keys_dir)] if keys_dir is not None else []),
            ],
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


def _last_log_line(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - _LOG_TAIL_BYTES))
            lines = [line.strip() for line in file.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


class WriterSpawner:
    """Spawns a writer when none serves: never while one it spawned still runs, and ever more
    rarely (up to once a minute) while the ones it spawns fail to start.

    Used by the Client's constructor and its sending thread alike, never at once (the
    constructor spawns before the thread starts).
    """

    def __init__(self, db_path: Path, keys_dir: Path | None = None) -> None:
        self.db_path = db_path
        self.keys_dir = keys_dir
        self.spawns = 0
        self.failures = 0  # spawned writers that exited with an error, all told
        self.last_error: str | None = None
        self._consecutive_failures = 0
        self._running: subprocess.Popen[bytes] | None = None
        self._running_served = False
        self._next_allowed = 0.0

    def writer_serves(self) -> None:
        """A live writer was seen: whatever failed before, the next need starts afresh."""
        self._consecutive_failures = 0
        if self._running is not None:
            self._running_served = True  # its death later is no failure to start

    def maybe_spawn(self, now: float) -> bool:
        """Spawn a writer unless one we spawned still runs or the backoff says wait; True if spawned."""
        self.poll(now)
        if self._running is not None or now < self._next_allowed:
            return False
        self.spawns += 1
        try:
            self._running = spawn_writer(self.db_path, self.keys_dir)
            self._running_served = False
        except OSError as exc:
            self._failed(now, f"could not start a writer for {self.db_path}: {exc}")
            return False
        self._next_allowed = now + SPAWN_MIN_INTERVAL_S
        return True

    def poll(self, now: float) -> None:
        """Reap the writer we spawned if it exited, and note a failure to start (at `now`, monotonic)."""
        process = self._running
        if process is None or process.poll() is None:
            return
        self._running = None
        code = process.returncode
        if code in _NOT_A_FAILURE or self._running_served:
            return
        detail = _last_log_line(writer_log_path(self.db_path)) or "no log line"
        self._failed(now, f"the writer spawned for {self.db_path} exited with code {code}: {detail}")

    def _failed(self, now: float, reason: str) -> None:
        self.last_error = reason  # first: whoever sees the count go up (another thread) sees why
        self.failures += 1
        self._consecutive_failures += 1
        backoff_s = min(SPAWN_MIN_INTERVAL_S * 2 ** (self._consecutive_failures - 1), SPAWN_BACKOFF_MAX_S)
        self._next_allowed = now + backoff_s
        log.error("%s; trying again in %.0f s", reason, backoff_s)
