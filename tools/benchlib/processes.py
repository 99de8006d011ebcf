"""The parent's side of its subprocesses: JSON-line children, the writer process, psutil samplers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .settings import READY_TIMEOUT_S, SAMPLE_INTERVAL_S, SCRIPT, WRITER_STOP_TIMEOUT_S

log = logging.getLogger("bench")


class BenchError(RuntimeError):
    """A measurement that could not be made (a process failed or missed its deadline)."""


def log_tail(path: Path, limit: int = 3000) -> str:
    """The last `limit` characters of a log file (empty if it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class Child:
    """A `bench.py --role ...` subprocess speaking JSON lines; its stderr goes to a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=env,  # None: this process's environment
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def send(self, obj: dict[str, Any]) -> None:
        """Write one JSON command line."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise BenchError(f"pid {self.proc.pid} is gone: {exc}\n{log_tail(self.log_path)}") from None

    def recv(self, deadline: float) -> dict[str, Any]:
        """The next JSON line, by `deadline` (monotonic)."""
        try:
            line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise BenchError(f"pid {self.proc.pid} missed its deadline\n{log_tail(self.log_path)}") from None
        if not line:
            self.proc.wait(timeout=10)
            raise BenchError(
                f"pid {self.proc.pid} exited with {self.proc.returncode}\n{log_tail(self.log_path)}"
            )
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise BenchError(f"pid {self.proc.pid}: {result['error']}\n{log_tail(self.log_path)}")
        return result

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to end; None if it did not in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process if it still runs; close its pipes and log."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._log.close()


class Children:
    """A group of GUI children, all killed in `close()`."""

    def __init__(self) -> None:
        self.members: list[Child] = []

    def start(self, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> Child:
        """Start one child (in `env`, else in this process's environment)."""
        child = Child(args, log_path, env)
        self.members.append(child)
        return child

    def broadcast(self, make: Callable[[int], dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
        """Send each child its command, then collect every answer by `deadline`."""
        for index, child in enumerate(self.members):
            child.send(make(index))
        return [child.recv(deadline) for child in self.members]

    def close(self) -> None:
        """Kill every child still running."""
        for child in self.members:
            child.kill()


class WriterProcess:
    """`python -m see_persistence writer --db PATH|URL [EXTRA...]` (optionally under cProfile, in `env`)."""

    def __init__(
        self,
        db: Path | str,
        log_path: Path,
        profile: Path | None = None,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.db = db
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in kill()
        prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *prefix,
                "-m",
                "see_persistence",
                "--log-level",
                log_level,
                "writer",
                "--db",
                str(db),
                *extra_args,
            ],
            stdout=self._log,
            stderr=self._log,
            env=env,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until this process holds the lease (alive, pid matches)."""
        from see_persistence import Reader

        deadline = time.monotonic() + timeout
        reader = Reader(self.db)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"writer exited with {self.proc.returncode}\n{log_tail(self.log_path)}")
                with contextlib.suppress(FileNotFoundError, sqlite3.Error):
                    status = reader.get_writer_status()
                    if status is not None and status.alive and status.pid == self.pid:
                        return
                if time.monotonic() >= deadline:
                    raise BenchError(f"writer pid {self.pid} did not hold the lease within {timeout} s")
                time.sleep(0.02)
        finally:
            reader.close()

    def peak_rss_hwm(self) -> int | None:
        """The kernel's high-water mark of the writer's RSS (VmHWM), if readable."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def stop(self, timeout: float = WRITER_STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait for the exit code (killed, -9, at the deadline)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("writer pid %d did not stop within %s s; killing it", self.pid, timeout)
                self.kill()
                return -9
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the writer if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._log.close()


class Sampler(threading.Thread):
    """Samples one process's CPU time and RSS with psutil every SAMPLE_INTERVAL_S."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name=f"sampler-{pid}")
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, rss bytes)
        self.machine: list[tuple[float, float]] = []  # (monotonic, busy CPU seconds of all CPUs)
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped or the process is gone."""
        import psutil

        try:
            process = psutil.Process(self.pid)
            while True:
                with process.oneshot():
                    times = process.cpu_times()
                    rss = process.memory_info().rss
                now = time.monotonic()
                self.samples.append((now, times.user + times.system, rss))
                machine = psutil.cpu_times()
                self.machine.append((now, sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)))
                if self._stop_event.wait(SAMPLE_INTERVAL_S):
                    return
        except psutil.Error:
            return

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=5)

    def cpu_fraction(self, t0: float, t1: float) -> float | None:
        """CPU seconds per wall second between the samples nearest t0 and t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def machine_busy(self, t0: float, t1: float) -> float | None:
        """Cores busy (all processes, kernel included) per wall second between t0 and t1."""
        inside = [s for s in self.machine if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def peak_rss(self) -> int | None:
        """The largest RSS sampled."""
        return max((s[2] for s in self.samples), default=None)


class LoadWatcher(threading.Thread):
    """CPU used by processes outside this benchmark's own process tree, sampled with psutil."""

    def __init__(self, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True, name="load-watcher")
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (monotonic, cores used by other processes)
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        import psutil

        me = os.getpid()
        last: dict[int, tuple[float, float]] = {}  # pid -> (create time, cpu seconds)
        last_at: float | None = None
        while True:
            now = time.monotonic()
            parents: dict[int, int] = {}
            cpu: dict[int, tuple[float, float]] = {}
            for proc in psutil.process_iter(["ppid", "cpu_times", "create_time"]):
                info = proc.info
                if info["cpu_times"] is None:
                    continue
                parents[proc.pid] = info["ppid"] or 0
                cpu[proc.pid] = (
                    info["create_time"] or 0.0,
                    info["cpu_times"].user + info["cpu_times"].system,
                )
            ours = {me}
            for pid in parents:  # a process is ours if `me` is among its ancestors
                chain, seen = pid, 0
                while chain and chain not in ours and seen < 64:
                    chain, seen = parents.get(chain, 0), seen + 1
                if chain in ours:
                    ours.add(pid)
            if last_at is not None:
                used = 0.0
                for pid, (created, seconds) in cpu.items():
                    if pid in ours:
                        continue
                    before = last.get(pid)
                    used += seconds - before[1] if before and before[0] == created else seconds
                self.samples.append((now, max(0.0, used) / (now - last_at)))
            last, last_at = cpu, now
            if self._stop_event.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=10)

    def between(self, t0: float, t1: float) -> tuple[float, float] | None:
        """Mean and peak cores used by other processes between two monotonic times."""
        inside = [cores for at, cores in self.samples if t0 < at <= t1 + self.interval_s]
        return (sum(inside) / len(inside), max(inside)) if inside else None
