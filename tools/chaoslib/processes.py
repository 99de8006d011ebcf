"""Every child process of a run (writers, clients, the other program), started so none outlives it.

Each child runs in its own session with its output in `<name>.log` in the run directory, and on
Linux the kernel SIGKILLs it if the supervisor dies. `Processes.end_all` kills and reaps whatever
still runs at the end, stopped ones included.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import other_writer

from .rundir import OTHER_LOG

log = logging.getLogger("see_persistence.chaos")

# The script that starts a run also plays the client role: the supervisor runs it again for each client.
ENTRY_POINT = Path(__file__).resolve().parent.parent / "chaos.py"
KILLED_EXIT_TIMEOUT_S = 10.0


@dataclass
class Child:
    """A process this run started, with its role and log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """Everything the process logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_exit(self, timeout: float) -> int | None:
        """Wait at most `timeout` s for the process to exit; its exit code, or None."""
        try:
            return self.process.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int | None:
        """SIGKILL the process and reap it (bounded); its exit code, or None if it did not end."""
        self.process.kill()
        return self.wait_exit(KILLED_EXIT_TIMEOUT_S)


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel SIGKILL the child if the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        """Runs in the child between fork and exec.

        The supervisor has threads (the sampler, the checker, a pruning Client's), but the hook
        touches none of their locks: CPython reinitializes its own before calling it, glibc's
        fork() leaves malloc usable, and prctl is a plain system call.
        """
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

    return hook


class Processes:
    """Every child process of the run, so that none is left behind."""

    def __init__(self, run_dir: Path, db: Path) -> None:
        """Start children that log into `run_dir` and work on `db`."""
        self.run_dir = run_dir
        self.db = db
        self.children: list[Child] = []
        self._writers = 0
        self._pre_exec = _parent_death_signal()

    def _start(self, name: str, argv: list[str]) -> Child:
        """Start one child in its own session (a Ctrl-C reaches only the supervisor)."""
        log_path = self.run_dir / f"{name}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the supervisor alone
                preexec_fn=self._pre_exec,  # only calls prctl (see _parent_death_signal)
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        log.debug("started %s, pid %d", name, child.pid)
        return child

    def start_writer(self, *, standby: bool) -> Child:
        """Start `see-persistence writer` (a standby if asked)."""
        name = f"writer-{self._writers}"
        self._writers += 1
        argv = [
            sys.executable,
            "-m",
            "see_persistence",
            "--log-level",
            "INFO",
            "writer",
            "--db",
            str(self.db),
        ]
        return self._start(name, [*argv, "--standby"] if standby else argv)

    def start_client(self, label: str, args: argparse.Namespace, lifetime: float | None = None) -> Child:
        """Start one client-role process of the tool's script (recording `lifetime` s, if given)."""
        argv = [
            sys.executable,
            str(ENTRY_POINT),
            "--client-role",
            "--db",
            str(self.db),
            "--run-dir",
            str(self.run_dir),
            "--label",
            label,
            "--seed",
            str(args.seed),
            "--flush-timeout",
            str(args.flush_timeout),
            "--max-buffered",
            str(args.max_buffered),
        ]
        if lifetime is not None:
            argv += ["--lifetime", f"{lifetime:.3f}"]
        return self._start(f"client-{label}", argv)

    def start_other_program(self, args: argparse.Namespace, start_at: float, stop_at: float) -> Child:
        """Start tools/other_writer.py: plain sqlite3 writes beside the writer, logged one per line."""
        argv = [
            sys.executable,
            str(Path(other_writer.__file__).resolve()),
            "--db",
            str(self.db),
            "--log",
            str(self.run_dir / OTHER_LOG),
            "--interval",
            str(args.other_interval),
            "--name-prefix",
            other_writer.DEFAULT_PREFIX,
            "--start-at",
            f"{start_at:.6f}",
            "--stop-at",
            f"{stop_at:.6f}",
        ]
        return self._start("other-program", argv)

    def clients(self) -> list[Child]:
        """Every client process this run started."""
        return [c for c in self.children if c.name.startswith("client-")]

    def writers(self) -> list[Child]:
        """The writer processes still running."""
        return [c for c in self.children if c.name.startswith("writer-") and c.running()]

    def by_pid(self, pid: int) -> Child | None:
        """The child with this pid, if it is one of ours."""
        return next((c for c in self.children if c.pid == pid), None)

    def end_all(self) -> None:
        """Kill every child still running and reap it (SIGCONT first, for a stopped one)."""
        for child in self.children:
            if child.process.poll() is not None:
                continue
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(child.pid, sig)
                except ProcessLookupError:
                    pass
        for child in self.children:
            if child.wait_exit(KILLED_EXIT_TIMEOUT_S) is None:
                log.error("%s (pid %d) did not end after SIGKILL", child.name, child.pid)
