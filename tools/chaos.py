"""Chaos/soak runner: proves guarantees 4-6 (atomic batches, nothing lost or doubled, one writer).

    python tools/chaos.py --clients 4 --seconds 30 --kill-every 2 [--db PATH] [--seed N]
                          [--stop-fraction 0.25] [--run-dir DIR] [--json]

It creates a fresh database, starts a writer and a standby writer, and N GUI-like client
processes that record workflows, tasks, task log lines and audit events as fast as they can,
each with contents derived from (client label, counter). Meanwhile it kills the active writer
with SIGKILL every ~--kill-every seconds, or (with probability --stop-fraction) freezes it
with SIGSTOP until it is presumed dead, then resumes it and expects it to exit with code 4.
After every takeover it starts a new standby, as a supervisor would. At the end it stops the
writer with SIGTERM and checks the database against what every client asked for.

Exit code 0 only if nothing was lost, duplicated or extra, every status is the last one asked
for, the integrity check is ok, no dead letters, and every stopped writer exited with code 4.
Run with --help for every option. Logs, manifests and the database stay in the run directory.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from see_persistence import Client, Reader, Status
from see_persistence.protocol.models import WriterStatus
from see_persistence.writer.lease import LEASE_STALE_AFTER_S

log = logging.getLogger("see_persistence.chaos")

POLL_S = 0.02
START_TIMEOUT_S = 30.0  # a writer or client process to be up and ready
TAKEOVER_TIMEOUT_S = 30.0  # after a kill, or after a stopped writer was presumed dead
STOP_BEYOND_STALE_S = 1.5  # how long past "presumed dead" a stopped writer stays stopped
RESUME_EXIT_TIMEOUT_S = 10.0  # a resumed writer that lost its lease must exit within this
KILLED_EXIT_TIMEOUT_S = 10.0
WRITER_STOP_TIMEOUT_S = 30.0  # SIGTERM to exit 0
CLIENT_EXIT_GRACE_S = 120.0  # on top of the clients' flush timeout: close, write the manifest
COUNTERS = ("writer.epoch", "writer.duplicates_total")  # what the writer publishes, if it does
STANDBY_TRIES = 3  # a standby that fails to start is replaced this many times before a fault is skipped
GO_TIMEOUT_S = 120.0  # a client waits this long for the supervisor's go
DEFAULT_MAX_BUFFERED = 20_000  # a client waits while it holds this many unconfirmed operations
MAX_DISCREPANCIES = 20  # kept for the report (the counts are always complete)
SHOWN_DISCREPANCIES = 8

WORKFLOW_FIELDS = ["id", "workflow_name", "status", "error_message"]
TASK_FIELDS = [
    "id",
    "workflow_id",
    "task_name",
    "execution_order",
    "status",
    "output",
    "error_message",
    "logs",
]
EVENT_FIELDS = ["id", "event_type", "message", "workflow_id", "task_id"]
KINDS = ("workflows", "tasks", "log_lines", "events")


# ------------------------------------------------------------------------------------------------
# The client role: one GUI-like process
# ------------------------------------------------------------------------------------------------


class Recorder:
    """Records workflows, tasks, log lines and audit events through one Client, and remembers them."""

    def __init__(self, client: Client, label: str, rng: random.Random) -> None:
        """Record through `client`; contents are derived from `label` and counters."""
        self.client = client
        self.label = label
        self.rng = rng
        self.workflows: list[list[Any]] = []
        self.tasks: list[list[Any]] = []
        self.events: list[list[Any]] = []
        self.operations = 0
        self.status_updates = 0
        self._next_event = 0

    def _final_status(self) -> Status:
        """A finishing status: mostly completed, sometimes failed or cancelled."""
        return self.rng.choices((Status.COMPLETED, Status.FAILED, Status.CANCELLED), weights=(80, 15, 5))[0]

    def _set_workflow_status(self, row: list[Any], status: Status, error: str | None = None) -> None:
        """Ask for a workflow status and remember it (the writer keeps the last error given)."""
        self.client.update_workflow_status(row[0], status, error_message=error)
        row[2] = status.value
        if error is not None:
            row[3] = error
        self.operations += 1
        self.status_updates += 1

    def _set_task_status(
        self, row: list[Any], status: Status, *, output: str | None = None, error: str | None = None
    ) -> None:
        """Ask for a task status and remember it (the writer keeps the last output and error given)."""
        self.client.update_task_status(row[0], status, output=output, error_message=error)
        row[4] = status.value
        if output is not None:
            row[5] = output
        if error is not None:
            row[6] = error
        self.operations += 1
        self.status_updates += 1

    def _event(self, workflow_id: str | None, task_id: str | None) -> None:
        """Ask for one audit event with a unique message."""
        message = f"{self.label}-ev-{self._next_event}"
        self._next_event += 1
        event_type = "chaos_task_step" if task_id else "chaos_step"
        data = {"client": self.label, "n": self._next_event - 1}
        event_id = self.client.log_audit_event(
            event_type, message, workflow_id=workflow_id, task_id=task_id, data=data
        )
        self.events.append([event_id, event_type, message, workflow_id, task_id])
        self.operations += 1

    def one_workflow(self, n: int) -> None:
        """Record workflow number `n`: its tasks, their log lines, audit events, and statuses."""
        c, rng = self.client, self.rng
        name = f"{self.label}-wf-{n}"
        workflow_id = c.create_workflow(name, metadata={"client": self.label, "n": n})
        workflow = [workflow_id, name, Status.PENDING.value, None]
        self.workflows.append(workflow)
        self.operations += 1
        self._set_workflow_status(workflow, Status.RUNNING)
        for order in range(1, rng.randint(1, 3) + 1):
            task_name = f"{name}-t{order}"
            task_id = c.create_task(workflow_id, task_name, execution_order=order)
            task: list[Any] = [task_id, workflow_id, task_name, order, Status.PENDING.value, None, None, []]
            self.tasks.append(task)
            self.operations += 1
            self._set_task_status(task, Status.RUNNING)
            for i in range(rng.randint(0, 4)):
                line = f"{task_name}-L{i}"
                c.append_task_log(task_id, line)
                task[7].append(line)
                self.operations += 1
            if rng.random() < 0.3:
                self._event(workflow_id, task_id)
            final = self._final_status()
            if final is Status.COMPLETED:
                self._set_task_status(task, final, output=f"{task_name}-out")
            elif final is Status.FAILED:
                self._set_task_status(task, final, error=f"{task_name}-err")
            else:
                self._set_task_status(task, final)
        self._event(workflow_id, None)
        final = self._final_status()
        self._set_workflow_status(workflow, final, f"{name}-err" if final is Status.FAILED else None)
        if rng.random() < 0.1:
            self._event(None, None)  # an event about no workflow at all

    def manifest(self) -> dict[str, Any]:
        """What this client asked for, as the manifest's record lists."""
        return {
            "workflow_fields": WORKFLOW_FIELDS,
            "workflows": self.workflows,
            "task_fields": TASK_FIELDS,
            "tasks": self.tasks,
            "event_fields": EVENT_FIELDS,
            "events": self.events,
            "operations": self.operations,
            "status_updates": self.status_updates,
        }


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"))
    os.replace(tmp, path)


def _wait_for_go(go_path: Path, timeout: float) -> dict[str, Any] | None:
    """Wait for the supervisor's go file; its contents, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(go_path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            time.sleep(0.01)
    return None


def run_client(args: argparse.Namespace) -> int:
    """The client role: record until the deadline, flush, close, write the manifest."""
    run_dir = Path(args.run_dir)
    label = args.label
    manifest_path = run_dir / f"client-{label}.manifest.json"
    client = Client(args.db)
    recorder = Recorder(client, label, random.Random(f"{args.seed}-{label}"))
    result: dict[str, Any] = {"label": label, "pid": os.getpid(), "instance_id": client.instance_id}
    (run_dir / f"client-{label}.ready").write_text(client.instance_id, encoding="utf-8")
    code = 0
    throttled_s = 0.0
    started = time.monotonic()
    try:
        go = _wait_for_go(run_dir / "go.json", GO_TIMEOUT_S)
        if go is None:
            raise RuntimeError("the supervisor never said go")
        started = time.monotonic()
        deadline = started + float(go["seconds"])
        n = 0
        while time.monotonic() < deadline:
            recorder.one_workflow(n)
            n += 1
            if client.stats.buffered > args.max_buffered:  # hold back rather than fill the outbox
                waited = time.monotonic()
                while client.stats.buffered > args.max_buffered // 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                throttled_s += time.monotonic() - waited
    except Exception:
        log.exception("client %s failed while recording", label)
        result["error"] = traceback.format_exc()
        code = 1
    result["recording_s"] = round(time.monotonic() - started, 3)
    result["throttled_s"] = round(throttled_s, 3)
    flush_started = time.monotonic()
    result["flushed"] = client.flush(args.flush_timeout)
    result["flush_s"] = round(time.monotonic() - flush_started, 3)
    result["closed"] = client.close(timeout=10.0)
    result["stats"] = dataclasses.asdict(client.stats)
    result.update(recorder.manifest())
    _write_json_atomically(manifest_path, result)
    log.info(
        "client %s: %d operations, flushed %s, stats %s",
        label,
        recorder.operations,
        result["flushed"],
        result["stats"],
    )
    return code


# ------------------------------------------------------------------------------------------------
# The supervisor: processes
# ------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """The supervisor was asked to stop (SIGINT or SIGTERM)."""


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


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel SIGKILL the child if the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        """Runs in the child between fork and exec (the supervisor has no other threads)."""
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
                preexec_fn=self._pre_exec,  # no threads here; the hook only calls prctl
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

    def start_client(self, label: str, args: argparse.Namespace) -> Child:
        """Start one client-role process of this very script."""
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
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
        return self._start(f"client-{label}", argv)

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
            if child.wait_exit(10.0) is None:
                log.error("%s (pid %d) did not end after SIGKILL", child.name, child.pid)


def wait_until(predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or the deadline passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def writer_status(reader: Reader) -> WriterStatus | None:
    """The lease as a Reader sees it; None if there is none yet or the file cannot be read now."""
    try:
        return reader.get_writer_status()
    except (FileNotFoundError, sqlite3.Error):
        return None


def holds_wal_write_lock(pid: int, db: Path) -> bool | None:
    """Whether `pid` holds SQLite's WAL write lock on `db` (byte 120 of the -shm file); None if unknown.

    Read from /proc/locks (Linux), without touching the database: the lock is a POSIX
    record lock, so a process frozen inside a write transaction still holds it.
    """
    try:
        inode = os.stat(f"{db}-shm").st_ino
        with open("/proc/locks", encoding="ascii") as locks:
            entries = [line.split() for line in locks if "->" not in line]
    except OSError:
        return None
    return any(
        len(f) >= 8
        and f[3] == "WRITE"
        and f[4] == str(pid)
        and f[5].rsplit(":", 1)[-1] == str(inode)
        and f[6] == "120"
        for f in entries
    )


def wait_holding(reader: Reader, child: Child, timeout: float) -> bool:
    """Wait until `child` holds the lease; False if it exits or the deadline passes."""

    def holding() -> bool:
        if not child.running():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{child.log_text()}")
        status = writer_status(reader)
        return status is not None and status.alive and status.pid == child.pid

    return bool(wait_until(holding, timeout))


def wait_standing_by(reader: Reader, child: Child, timeout: float) -> bool:
    """Wait until a standby writer says it stands by (or already holds the lease)."""

    def ready() -> bool:
        if not child.running():
            return True  # reported by the caller
        if "standing by" in child.log_text():
            return True
        status = writer_status(reader)
        return status is not None and status.alive and status.pid == child.pid

    return bool(wait_until(ready, timeout)) and child.running()


# ------------------------------------------------------------------------------------------------
# The supervisor: chaos
# ------------------------------------------------------------------------------------------------


@dataclass
class Action:
    """One thing done to the active writer, and what followed."""

    kind: str  # "kill" or "stop"
    at_s: float  # seconds since the clients were told to go
    pid: int
    epoch: int
    new_pid: int | None = None
    new_epoch: int | None = None
    takeover_s: float | None = None  # kill: from SIGKILL; stop: from the moment it was presumed dead
    stopped_s: float | None = None  # stop: how long it was stopped
    exit_code: int | None = None
    write_lock_held: bool | None = None  # stop: whether it held SQLite's WAL write lock while stopped
    outcome: str = ""  # stop: "exited 4", or what happened instead
    note: str = ""


@dataclass
class Chaos:
    """What the supervisor did, and what it saw go wrong."""

    actions: list[Action] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    duplicates_by_epoch: dict[int, int] = field(default_factory=dict)  # from the writers' counters

    def anomaly(self, text: str) -> None:
        """Record something that went wrong (it fails the run)."""
        log.error("%s", text)
        self.anomalies.append(text)


class Supervisor:
    """Starts the writers and clients, injects the faults, replaces the standby."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, db: Path) -> None:
        """Prepare a run in `run_dir` on the database `db`."""
        self.args = args
        self.run_dir = run_dir
        self.db = db
        self.rng = random.Random(args.seed)
        self.processes = Processes(run_dir, db)
        self.reader = Reader(db)
        self.chaos = Chaos()
        self.go_at = 0.0

    def start_standby(self) -> bool:
        """Start a standby writer and wait until it stands by; False (an anomaly) if it does not."""
        standby = self.processes.start_writer(standby=True)
        if wait_standing_by(self.reader, standby, START_TIMEOUT_S):
            return True
        code = standby.process.poll()
        if code is None:
            self.chaos.anomaly(
                f"standby {standby.name} (pid {standby.pid}) was not standing by within {START_TIMEOUT_S} s"
            )
            standby.process.kill()
            standby.wait_exit(KILLED_EXIT_TIMEOUT_S)
        else:
            last = (standby.log_text().strip().splitlines() or ["(nothing logged)"])[-1]
            self.chaos.anomaly(
                f"standby {standby.name} (pid {standby.pid}) exited with {code} before standing by: {last}"
            )
        return False

    def start_writers(self) -> None:
        """The first writer (waits until it holds the lease), then a standby."""
        first = self.processes.start_writer(standby=False)
        if not wait_holding(self.reader, first, START_TIMEOUT_S):
            raise RuntimeError(f"the first writer did not take the lease within {START_TIMEOUT_S} s")
        if not self.ensure_standby(first.pid):
            raise RuntimeError("no standby writer would stand by")

    def start_clients(self) -> list[Child]:
        """Start the clients, wait until each has its Client, then tell them all to go."""
        labels = [f"c{i}" for i in range(self.args.clients)]
        clients = [self.processes.start_client(label, self.args) for label in labels]

        def all_ready() -> bool:
            for child in clients:
                if not child.running():
                    raise RuntimeError(f"{child.name} exited early:\n{child.log_text()}")
            return all((self.run_dir / f"client-{label}.ready").exists() for label in labels)

        if not wait_until(all_ready, START_TIMEOUT_S):
            raise RuntimeError(f"the clients were not ready within {START_TIMEOUT_S} s")
        _write_json_atomically(self.run_dir / "go.json", {"seconds": self.args.seconds})
        self.go_at = time.monotonic()
        log.info("%d clients recording for %s s", len(clients), self.args.seconds)
        return clients

    def elapsed(self) -> float:
        """Seconds since the clients were told to go."""
        return time.monotonic() - self.go_at

    def active_writer(self) -> tuple[WriterStatus, Child] | None:
        """The lease holder, if it is alive and one of our processes."""
        status = writer_status(self.reader)
        if status is None or not status.alive:
            self.chaos.anomaly(f"at {self.elapsed():.1f} s no live writer holds the lease ({status})")
            return None
        child = self.processes.by_pid(status.pid)
        if child is None or not child.running():
            self.chaos.anomaly(f"the lease holder pid {status.pid} is not a writer this run started")
            return None
        return status, child

    def ensure_standby(self, active_pid: int) -> bool:
        """Unless a writer other than the active one runs, start a standby (a few tries); False if none."""
        if any(w.pid != active_pid for w in self.processes.writers()):
            return True
        return any(self.start_standby() for _ in range(STANDBY_TRIES))

    def _new_holder(self, old_epoch: int) -> WriterStatus | None:
        """The lease if a live writer holds it with an epoch above `old_epoch`."""
        status = writer_status(self.reader)
        if status is not None and status.epoch > old_epoch and status.alive:
            return status
        return None

    def kill(self, status: WriterStatus, victim: Child) -> Action:
        """SIGKILL the active writer; wait for the standby to hold the lease."""
        action = Action("kill", round(self.elapsed(), 3), victim.pid, status.epoch)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        action.exit_code = victim.wait_exit(KILLED_EXIT_TIMEOUT_S)
        holder = wait_until(lambda: self._new_holder(status.epoch), TAKEOVER_TIMEOUT_S)
        if holder is None:
            self.chaos.anomaly(f"kill of pid {victim.pid}: no writer took over within {TAKEOVER_TIMEOUT_S} s")
        else:
            action.takeover_s = round(time.monotonic() - killed_at, 4)
            action.new_pid, action.new_epoch = holder.pid, holder.epoch
        return action

    def stop(self, status: WriterStatus, victim: Child) -> Action:
        """SIGSTOP the active writer past the point it is presumed dead, SIGCONT it, expect exit 4."""
        action = Action("stop", round(self.elapsed(), 3), victim.pid, status.epoch)
        stopped_at = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        # Read the heartbeat again once it is stopped: it cannot renew it any more.
        after = writer_status(self.reader)
        heartbeat = after.heartbeat if after is not None and after.epoch == status.epoch else status.heartbeat
        presumed_dead_wall = heartbeat.timestamp() + LEASE_STALE_AFTER_S
        resume_wall = min(
            presumed_dead_wall + STOP_BEYOND_STALE_S, time.time() + LEASE_STALE_AFTER_S + STOP_BEYOND_STALE_S
        )
        time.sleep(POLL_S)
        action.write_lock_held = holds_wal_write_lock(victim.pid, self.db)
        holder: WriterStatus | None = None
        seen_wall = 0.0
        while time.time() < resume_wall:
            holder = holder or self._new_holder(status.epoch)
            seen_wall = seen_wall or (time.time() if holder else 0.0)
            time.sleep(POLL_S)
        resumed_wall = time.time()
        try:
            os.kill(victim.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # it is gone already (reported below)
        action.stopped_s = round(time.monotonic() - stopped_at, 3)
        taken_while_stopped = holder is not None
        kept_lease = False
        exit_deadline = time.monotonic() + RESUME_EXIT_TIMEOUT_S
        takeover_deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while True:
            if holder is None:
                current = writer_status(self.reader)
                if current is not None and current.epoch > status.epoch and current.alive:
                    holder, seen_wall = current, time.time()
                elif (
                    current is not None
                    and current.epoch == status.epoch
                    and current.pid == victim.pid
                    and current.released is None
                    and current.heartbeat.timestamp() > resumed_wall
                ):
                    kept_lease = True  # it renewed the lease after it resumed: it is the writer again
                    break
            exited = not victim.running()
            now = time.monotonic()
            if (exited and holder is not None) or now >= (takeover_deadline if exited else exit_deadline):
                break
            time.sleep(POLL_S)
        action.exit_code = victim.process.poll()
        if holder is not None:
            action.takeover_s = round(seen_wall - presumed_dead_wall, 4)
            action.new_pid, action.new_epoch = holder.pid, holder.epoch
            action.note = "taken over while stopped" if taken_while_stopped else "taken over after it resumed"
        lock = {True: "it held", False: "it did not hold", None: "unknown whether it held"}[
            action.write_lock_held
        ]
        if action.exit_code == 4:
            action.outcome = "exited 4"
            return action
        if kept_lease:
            action.outcome = "resumed and kept the lease"
            action.note = "resumed and kept the lease: no standby took over while it was stopped"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid} (epoch {status.epoch}) for {action.stopped_s} s: no standby"
                f" took over within {STOP_BEYOND_STALE_S} s of it being presumed dead ({lock} the"
                " database's write lock while stopped); it resumed and went on as the writer"
            )
        elif action.exit_code is None:
            action.outcome = "did not exit"
            action.note = "still running without the lease; killed by the supervisor"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid}: resumed and did not exit within"
                f" {RESUME_EXIT_TIMEOUT_S} s; killed"
            )
            victim.process.kill()
            victim.wait_exit(KILLED_EXIT_TIMEOUT_S)
        else:
            killer = self.killer_of(victim.pid) if action.exit_code == -signal.SIGKILL else None
            action.outcome = f"exited {action.exit_code}"
            if killer:
                action.outcome = "SIGKILLed by a standby while stopped"
                action.note = f"SIGKILLed while stopped by {killer} (as a frozen holder of the write lock)"
            self.chaos.anomaly(
                f"stop of writer pid {victim.pid} (epoch {status.epoch}): exited with {action.exit_code},"
                f" not 4 ({lock} the write lock while stopped"
                + (f"; {killer} SIGKILLed it" if killer else "")
                + (")" if holder else "); no writer took over")
            )
        return action

    def killer_of(self, pid: int) -> str | None:
        """The writer whose log says it killed writer `pid` (a standby killing a frozen holder)."""
        for child in self.processes.children:
            if child.name.startswith("writer-") and child.pid != pid:
                for line in child.log_text().splitlines():
                    if f"pid {pid} " in line and "killing it" in line:
                        return f"{child.name} (pid {child.pid})"
        return None

    def run_chaos(self, clients: list[Child]) -> None:
        """Until the clients' recording time is over: every ~kill-every s, kill or stop the active writer."""
        end = self.go_at + self.args.seconds
        next_at = self.go_at + self._interval()
        reported: set[str] = set()
        while True:
            pause = min(next_at, end) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if time.monotonic() >= end:
                break
            for child in clients:
                if not child.running() and child.process.returncode != 0 and child.name not in reported:
                    reported.add(child.name)
                    self.chaos.anomaly(f"{child.name} exited with {child.process.returncode} while recording")
            started = time.monotonic()
            self.one_fault()
            next_at = started + self._interval()

    def one_fault(self) -> None:
        """Kill or stop the active writer (a standby ready first), then make sure a new standby waits."""
        stop = self.rng.random() < self.args.stop_fraction
        current = writer_status(self.reader)
        if current is not None and not self.ensure_standby(current.pid):
            self.chaos.anomaly(f"at {self.elapsed():.1f} s no standby would stand by; this fault is skipped")
            return
        active = self.active_writer()
        if active is None:
            return
        status, victim = active
        self.sample_duplicates()
        action = self.stop(status, victim) if stop else self.kill(status, victim)
        self.chaos.actions.append(action)
        log.info(
            "%s pid %d at %.1f s: takeover %s s by pid %s (epoch %s), exit %s %s",
            action.kind,
            action.pid,
            action.at_s,
            action.takeover_s,
            action.new_pid,
            action.new_epoch,
            action.exit_code,
            action.note,
        )
        holder = writer_status(self.reader)
        if holder is not None:
            self.ensure_standby(holder.pid)

    def _interval(self) -> float:
        """Seconds until the next fault: uniform around --kill-every."""
        return float(self.rng.uniform(0.5, 1.5) * self.args.kill_every)

    def sample_duplicates(self) -> None:
        """Note the active writer's published count of duplicates it skipped, if it publishes one."""
        try:
            rows = dict(self.reader.query("SELECT name, value FROM counters WHERE name IN (?, ?)", COUNTERS))
        except (FileNotFoundError, sqlite3.Error, ValueError):
            return  # no counters table in this version of the writer
        if "writer.epoch" in rows and "writer.duplicates_total" in rows:
            epoch, value = int(rows["writer.epoch"]), int(rows["writer.duplicates_total"])
            seen = self.chaos.duplicates_by_epoch
            seen[epoch] = max(value, seen.get(epoch, 0))

    def wait_clients(self, clients: list[Child]) -> None:
        """Wait for every client to flush, close, write its manifest and exit."""
        deadline = time.monotonic() + self.args.flush_timeout + CLIENT_EXIT_GRACE_S
        while any(c.running() for c in clients) and time.monotonic() < deadline:
            self.sample_duplicates()
            time.sleep(0.25)
        for child in clients:
            code = child.wait_exit(deadline - time.monotonic())
            if code is None:
                self.chaos.anomaly(f"{child.name} did not finish within its deadline; killed")
                child.process.kill()
                child.wait_exit(KILLED_EXIT_TIMEOUT_S)
            elif code != 0:
                self.chaos.anomaly(f"{child.name} exited with {code} (see {child.log_path})")

    def stop_writers(self) -> dict[str, Any]:
        """SIGTERM the standbys, then the active writer; each must exit 0."""
        status = writer_status(self.reader)
        active_pid = status.pid if status is not None and status.alive else None
        writers = self.processes.writers()
        ordered = [w for w in writers if w.pid != active_pid] + [w for w in writers if w.pid == active_pid]
        codes: dict[str, Any] = {}
        self.sample_duplicates()
        for writer in ordered:
            os.kill(writer.pid, signal.SIGCONT)
            os.kill(writer.pid, signal.SIGTERM)
            code = writer.wait_exit(WRITER_STOP_TIMEOUT_S)
            role = "active" if writer.pid == active_pid else "standby"
            codes[f"{writer.name} ({role})"] = code
            if code != 0:
                self.chaos.anomaly(f"{role} writer {writer.name} (pid {writer.pid}) exited {code} on SIGTERM")
        self.sample_duplicates()  # what the last writer published as it stopped, if it does
        return codes


# ------------------------------------------------------------------------------------------------
# Verification
# ------------------------------------------------------------------------------------------------


@dataclass
class KindCounts:
    """Per kind of record: asked for, committed, and what went wrong."""

    asked: int = 0
    committed: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0


@dataclass
class Verification:
    """The database checked against the manifests."""

    kinds: dict[str, KindCounts] = field(default_factory=lambda: {k: KindCounts() for k in KINDS})
    statuses_checked: int = 0
    mismatched: int = 0  # present, but a status, name, output, error or log order differs
    dead_letters: int = 0
    integrity: str = "not checked"
    instances_ended: int = 0
    discrepancies: list[str] = field(default_factory=list)
    discrepancy_count: int = 0

    def note(self, text: str) -> None:
        """Keep the first few discrepancies for the report."""
        self.discrepancy_count += 1
        if len(self.discrepancies) < MAX_DISCREPANCIES:
            self.discrepancies.append(text)

    def total(self, what: str) -> int:
        """The sum over kinds of `lost`, `duplicated` or `extra`."""
        return sum(getattr(k, what) for k in self.kinds.values())


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A mode=ro connection in autocommit, closed at the end."""
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _check_duplicates(v: Verification, kind: str, asked: set[str], counts: Counter[str]) -> None:
    """Count contents the database holds more than once."""
    for content in asked:
        if counts[content] > 1:
            v.kinds[kind].duplicated += counts[content] - 1
            v.note(f"{kind}: {content!r} is there {counts[content]} times")


def _verify_workflows(conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification) -> None:
    """Every workflow asked for exists once, with its name, last status and last error."""
    expected = {row[0]: row for m in manifests for row in m["workflows"]}
    k = v.kinds["workflows"]
    k.asked = len(expected)
    names: Counter[str] = Counter()
    found: set[str] = set()
    for row in conn.execute("SELECT id, workflow_name, status, error_message FROM workflow_executions"):
        names[row[1]] += 1
        want = expected.get(row[0])
        if want is None:
            k.extra += 1
            v.note(f"workflows: extra {row[0]} {row[1]!r}")
            continue
        found.add(row[0])
        v.statuses_checked += 1
        if list(row) != want:
            v.mismatched += 1
            v.note(f"workflows: {row[0]} is {list(row)}, asked for {want}")
    k.committed = len(found)
    k.lost = k.asked - k.committed
    for workflow_id in list(expected.keys() - found)[:3]:
        v.note(f"workflows: lost {workflow_id} {expected[workflow_id][1]!r}")
    _check_duplicates(v, "workflows", {row[1] for row in expected.values()}, names)


def _verify_logs(v: Verification, task_id: str, got: list[str], want: list[str]) -> None:
    """A task's logs equal what was asked for, in order; count what is missing, doubled, extra."""
    k = v.kinds["log_lines"]
    if got == want:
        k.committed += len(want)
        return
    wanted, have = Counter(want), Counter(got)
    k.committed += sum(min(n, have[line]) for line, n in wanted.items())
    k.lost += sum(max(0, n - have[line]) for line, n in wanted.items())
    k.duplicated += sum(max(0, n - wanted[line]) for line, n in have.items() if line in wanted)
    k.extra += sum(n for line, n in have.items() if line not in wanted)
    if wanted == have:
        v.mismatched += 1  # the right lines in the wrong order
    v.note(f"log_lines: task {task_id} has {got[:6]}, asked for {want[:6]}")


def _verify_tasks(conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification) -> None:
    """Every task asked for exists once, with its fields, last status and its log lines in order."""
    expected = {row[0]: row for m in manifests for row in m["tasks"]}
    k = v.kinds["tasks"]
    k.asked = len(expected)
    v.kinds["log_lines"].asked = sum(len(row[7]) for row in expected.values())
    names: Counter[str] = Counter()
    found: set[str] = set()
    for row in conn.execute(
        "SELECT id, workflow_id, task_name, execution_order, status, output, error_message, logs"
        " FROM task_executions"
    ):
        names[row[2]] += 1
        got_logs = json.loads(row[7]) if row[7] else []
        want = expected.get(row[0])
        if want is None:
            k.extra += 1
            v.kinds["log_lines"].extra += len(got_logs)
            v.note(f"tasks: extra {row[0]} {row[2]!r}")
            continue
        found.add(row[0])
        v.statuses_checked += 1
        if list(row[:7]) != want[:7]:
            v.mismatched += 1
            v.note(f"tasks: {row[0]} is {list(row[:7])}, asked for {want[:7]}")
        _verify_logs(v, row[0], got_logs, want[7])
    k.committed = len(found)
    k.lost = k.asked - k.committed
    for task_id in expected.keys() - found:
        v.kinds["log_lines"].lost += len(expected[task_id][7])
        if k.lost and len(v.discrepancies) < MAX_DISCREPANCIES:
            v.note(f"tasks: lost {task_id} {expected[task_id][2]!r}")
    _check_duplicates(v, "tasks", {row[2] for row in expected.values()}, names)


def _verify_events(conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification) -> None:
    """Every audit event asked for exists once, with its type, message and links."""
    expected = {row[0]: row for m in manifests for row in m["events"]}
    k = v.kinds["events"]
    k.asked = len(expected)
    messages: Counter[str] = Counter()
    found: set[str] = set()
    for row in conn.execute("SELECT id, event_type, message, workflow_id, task_id FROM audit_events"):
        messages[row[2]] += 1
        want = expected.get(row[0])
        if want is None:
            k.extra += 1
            v.note(f"events: extra {row[0]} {row[1]!r} {row[2]!r}")
            continue
        found.add(row[0])
        if list(row) != want:
            v.mismatched += 1
            v.note(f"events: {row[0]} is {list(row)}, asked for {want}")
    k.committed = len(found)
    k.lost = k.asked - k.committed
    for event_id in list(expected.keys() - found)[:3]:
        v.note(f"events: lost {event_id} {expected[event_id][2]!r}")
    _check_duplicates(v, "events", {row[2] for row in expected.values()}, messages)


def verify(db: Path, manifests: list[dict[str, Any]]) -> Verification:
    """Check the database against what the clients asked for, read-only."""
    v = Verification()
    with read_only(db) as conn:
        _verify_workflows(conn, manifests, v)
        _verify_tasks(conn, manifests, v)
        _verify_events(conn, manifests, v)
        v.dead_letters = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        for instance_id, seq, reason in conn.execute(
            "SELECT instance_id, seq, reason FROM dead_letters ORDER BY id LIMIT 3"
        ):
            v.note(f"dead letter from {instance_id} seq {seq}: {reason}")
        ended = {row[0] for row in conn.execute("SELECT id FROM instances WHERE state = 'ended'")}
        v.instances_ended = sum(1 for m in manifests if m.get("instance_id") in ended)
        v.integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    return v


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, float | None]:
    """min, median and max of `values` (None when empty)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def build_report(
    args: argparse.Namespace,
    run_dir: Path,
    db: Path,
    duration_s: float,
    manifests: list[dict[str, Any]],
    chaos: Chaos,
    writer_exits: dict[str, Any],
    v: Verification,
) -> dict[str, Any]:
    """Everything the run measured, as one JSON-able dict."""
    stats = [m.get("stats", {}) for m in manifests]
    operations = sum(m.get("operations", 0) for m in manifests)
    recording_s = max((m.get("recording_s", 0.0) for m in manifests), default=0.0)
    kills = [a for a in chaos.actions if a.kind == "kill"]
    stops = [a for a in chaos.actions if a.kind == "stop"]
    problems = list(chaos.anomalies)
    for m in manifests:
        if not m.get("flushed"):
            problems.append(f"client {m['label']}: flush did not confirm everything")
        if m.get("error"):
            problems.append(f"client {m['label']}: {m['error'].strip().splitlines()[-1]}")
        if m.get("stats", {}).get("dropped"):
            problems.append(f"client {m['label']}: its outbox dropped {m['stats']['dropped']} operations")
    missing = args.clients - len(manifests)
    if missing:
        problems.append(f"{missing} client(s) wrote no manifest")
    if v.integrity != "ok":
        problems.append(f"integrity_check: {v.integrity[:200]}")
    stopped_exit_4 = sum(1 for a in stops if a.exit_code == 4)
    passed = (
        not problems
        and v.total("lost") == 0
        and v.total("duplicated") == 0
        and v.total("extra") == 0
        and v.mismatched == 0
        and v.dead_letters == 0
        and stopped_exit_4 == len(stops)
    )
    return {
        "passed": passed,
        "command": " ".join(["python", "tools/chaos.py", *sys.argv[1:]]),
        "run_dir": str(run_dir),
        "db": str(db),
        "seed": args.seed,
        "clients": args.clients,
        "duration_s": round(duration_s, 1),
        "recording_s": round(recording_s, 1),
        "operations": operations,
        "ops_per_s": round(operations / recording_s) if recording_s else 0,
        "status_updates": sum(m.get("status_updates", 0) for m in manifests),
        "records": {kind: dataclasses.asdict(counts) for kind, counts in v.kinds.items()},
        "resent": sum(s.get("resent", 0) for s in stats),
        "reconnects": sum(s.get("reconnects", 0) for s in stats),
        "dropped": sum(s.get("dropped", 0) for s in stats),
        "throttled_s": round(sum(m.get("throttled_s", 0.0) for m in manifests), 1),
        # A lower bound: what each writer last published before it ended (None: it publishes nothing).
        "duplicates_skipped_at_least": sum(chaos.duplicates_by_epoch.values())
        if chaos.duplicates_by_epoch
        else None,
        "duplicates_skipped_epochs_seen": len(chaos.duplicates_by_epoch),
        "kills": len(kills),
        "stops": len(stops),
        "stopped_exited_4": stopped_exit_4,
        "stop_outcomes": dict(Counter(a.outcome for a in stops)),
        "stops_holding_write_lock": sum(1 for a in stops if a.write_lock_held),
        "takeover_after_kill_s": _spread([a.takeover_s for a in kills if a.takeover_s is not None]),
        "takeover_after_presumed_dead_s": _spread([a.takeover_s for a in stops if a.takeover_s is not None]),
        "lost": v.total("lost"),
        "duplicated": v.total("duplicated"),
        "extra": v.total("extra"),
        "mismatched": v.mismatched,
        "statuses_checked": v.statuses_checked,
        "dead_letters": v.dead_letters,
        "integrity": v.integrity,
        "instances_ended": v.instances_ended,
        "writer_exits": writer_exits,
        "problems": problems,
        "discrepancies": v.discrepancies,
        "discrepancy_count": v.discrepancy_count,
        "actions": [dataclasses.asdict(a) for a in chaos.actions],
    }


def _ms(spread: dict[str, float | None]) -> str:
    """min/median/max in milliseconds, or n/a."""
    if spread["min"] is None:
        return "n/a"
    return " / ".join(f"{1000 * value:.0f}" for value in spread.values() if value is not None) + " ms"


def _duplicates_line(r: dict[str, Any]) -> str:
    """What the writers said about the resent messages they skipped."""
    if r["duplicates_skipped_at_least"] is None:
        return "  duplicates   skipped by the writers: not reported (this writer publishes no count)"
    return (
        f"  duplicates   skipped by the writers: at least {r['duplicates_skipped_at_least']:,} messages"
        f" (the last count each of {r['duplicates_skipped_epochs_seen']} writers published before it ended)"
    )


def format_report(r: dict[str, Any]) -> str:
    """The report as one screen of text."""
    lines = [
        f"see-persistence chaos run: {'PASS' if r['passed'] else 'FAIL'}",
        f"  command      {r['command']}",
        f"  run dir      {r['run_dir']}  (seed {r['seed']})",
        f"  duration     {r['duration_s']} s in all, {r['recording_s']} s recording, {r['clients']} clients",
        f"  operations   {r['operations']:,} asked ({r['ops_per_s']:,} ops/s),"
        f" {r['status_updates']:,} of them status updates",
        f"  clients      resent {r['resent']:,} operations, {r['reconnects']} reconnects, dropped"
        f" {r['dropped']}, held back {r['throttled_s']} s (outbox over --max-buffered)",
        _duplicates_line(r),
        f"  {'records':<13}{'asked':>12}{'committed':>12}{'lost':>8}{'duplicated':>12}{'extra':>8}",
    ]
    for kind, c in r["records"].items():
        lines.append(
            f"    {kind:<11}{c['asked']:>12,}{c['committed']:>12,}"
            f"{c['lost']:>8}{c['duplicated']:>12}{c['extra']:>8}"
        )
    lines += [
        f"  chaos        {r['kills']} kills (SIGKILL), {r['stops']} stops (SIGSTOP past presumed dead),"
        f" {r['stopped_exited_4']} of the stopped writers exited with code 4",
        f"  stops        {r['stops_holding_write_lock']} stopped inside a write transaction (holding the"
        f" write lock); outcomes: {', '.join(f'{k} {v}' for k, v in r['stop_outcomes'].items()) or 'none'}",
        f"  takeover     after a kill {_ms(r['takeover_after_kill_s'])} (min / median / max);"
        f" after presumed dead {_ms(r['takeover_after_presumed_dead_s'])}",
        f"  checks       lost {r['lost']}, duplicated {r['duplicated']}, extra {r['extra']}, mismatched"
        f" {r['mismatched']} (of {r['statuses_checked']:,} statuses), dead letters {r['dead_letters']},"
        f" integrity {r['integrity'][:60]}",
        f"  writers      {', '.join(f'{k} exit {v}' for k, v in r['writer_exits'].items())}",
    ]
    shown = (r["problems"] + r["discrepancies"])[:SHOWN_DISCREPANCIES]
    if shown:
        lines.append(f"  first discrepancies ({len(r['problems']) + r['discrepancy_count']} in all):")
        lines += [f"    - {text[:200]}" for text in shown]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _load_manifests(run_dir: Path, clients: int) -> list[dict[str, Any]]:
    """The manifests the clients wrote (a missing one is reported by build_report)."""
    manifests = []
    for i in range(clients):
        path = run_dir / f"client-c{i}.manifest.json"
        try:
            with open(path, encoding="utf-8") as f:
                manifests.append(json.load(f))
        except (FileNotFoundError, ValueError) as exc:
            log.error("no usable manifest %s: %s", path, exc)
    return manifests


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C: every child is killed on the way out."""
    raise Interrupted(signal.Signals(signum).name)


def run_supervisor(args: argparse.Namespace) -> int:
    """The whole run: start, inject faults, stop, verify, report. Returns the exit code."""
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="see-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    db = Path(args.db).expanduser().resolve() if args.db else run_dir / "workflows.db"
    if db.exists():
        print(f"chaos: {db} exists; the run needs a fresh database", file=sys.stderr)
        return 2
    if any(run_dir.glob("client-*.manifest.json")) or (run_dir / "go.json").exists():
        print(f"chaos: {run_dir} holds an earlier run; give a new --run-dir", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_terminate)
    started = time.monotonic()
    supervisor = Supervisor(args, run_dir, db)
    log.info("run directory %s, database %s, seed %d", run_dir, db, args.seed)
    try:
        supervisor.start_writers()
        clients = supervisor.start_clients()
        supervisor.run_chaos(clients)
        log.info("recording over; waiting for the clients to flush")
        supervisor.wait_clients(clients)
        writer_exits = supervisor.stop_writers()
    except (KeyboardInterrupt, Interrupted):
        log.error("interrupted; killing every process of the run")
        return 130
    except RuntimeError as exc:
        log.error("the run could not go on: %s", exc)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.processes.end_all()
        supervisor.reader.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    manifests = _load_manifests(run_dir, args.clients)
    log.info("verifying %s against %d manifests", db, len(manifests))
    verification = verify(db, manifests)
    report = build_report(
        args, run_dir, db, time.monotonic() - started, manifests, supervisor.chaos, writer_exits, verification
    )
    _write_json_atomically(run_dir / "report.json", report)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of the tool (the supervisor's options and the client role's)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="how long the clients record (default 30)"
    )
    parser.add_argument(
        "--kill-every", type=float, default=2.0, help="mean seconds between faults (default 2)"
    )
    parser.add_argument(
        "--stop-fraction",
        type=float,
        default=0.25,
        help="share of faults that SIGSTOP the writer instead of SIGKILL (default 0.25)",
    )
    parser.add_argument("--db", help="the database to create (default: workflows.db in the run directory)")
    parser.add_argument("--run-dir", help="where logs, manifests and the report go (default: a new temp dir)")
    parser.add_argument("--seed", type=int, default=None, help="seeds the faults and the workloads")
    parser.add_argument("--flush-timeout", type=float, default=60.0, help="each client's final flush (s)")
    parser.add_argument(
        "--max-buffered",
        type=int,
        default=DEFAULT_MAX_BUFFERED,
        help="a client holds back while this many of its operations are unconfirmed (default 20000)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--client-role", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="c0", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor, or one client when started with --client-role."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.client_role:
        if not args.db or not args.run_dir:
            parser.error("--client-role needs --db and --run-dir")
        return run_client(args)
    if args.clients < 1 or args.seconds <= 0 or args.kill_every <= 0 or not 0 <= args.stop_fraction <= 1:
        parser.error("--clients >= 1, --seconds > 0, --kill-every > 0 and 0 <= --stop-fraction <= 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return run_supervisor(args)


if __name__ == "__main__":
    raise SystemExit(main())
