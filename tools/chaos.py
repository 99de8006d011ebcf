"""Chaos/soak runner: proves guarantees 4-6 (atomic batches, nothing lost or doubled, one writer).

    python tools/chaos.py --clients 4 --seconds 30 --kill-every 2 [--db PATH] [--seed N]
                          [--stop-fraction 0.25] [--other-interval 0.05] [--run-dir DIR] [--json]
    python tools/chaos.py --soak [--minutes 60] [--clients 4] [--client-seconds 60]
                          [--kill-every 240] [--max-db-mb 8192] [--run-dir DIR] [--json]

It creates a fresh database, starts a writer and a standby writer, and N GUI-like client
processes that record workflows, tasks, task log lines and audit events as fast as they can,
each with contents derived from (client label, counter). Meanwhile it kills the active writer
with SIGKILL every ~--kill-every seconds, or (with probability --stop-fraction) freezes it
with SIGSTOP until it is presumed dead, then resumes it and expects it to exit with code 4.
After every takeover it starts a new standby, as a supervisor would. At the end it stops the
writer with SIGTERM and checks the database against what every client asked for.

With --other-interval (on by default in a soak) another program writes the same file directly
(tools/other_writer.py: plain sqlite3, busy timeout 30 s, one workflow every 50 ms); its rows
are checked too, and its write waits and errors reported. Throughout, a sampler notes the
WAL's size, the active writer's RSS and the counters the writer publishes (its longest batch
commit of each second), reported over time.

--soak keeps the writer saturated for --minutes: each client records for about
--client-seconds and is replaced as soon as it stops recording, so the load never pauses. Each
client's records are checked as soon as it has exited (so memory and manifests stay bounded),
and once the file passes --max-db-mb the records already checked are pruned through
`Client.prune` (the product's own retention), so an hour at saturation fits on the disk.

Exit code 0 only if nothing was lost, duplicated or extra, every status is the last one asked
for, the integrity check is ok, no dead letters, every stopped writer exited with code 4, and
the other program (if it ran) saw no error.
Run with --help for every option. Logs, manifests and the database stay in the run directory.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import math
import os
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
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

import psutil

from see_persistence import Client, Reader, Status
from see_persistence.protocol.models import WriterStatus
from see_persistence.writer.checkpointer import WAL_RESTART_PAGES
from see_persistence.writer.lease import LEASE_STALE_AFTER_S
from see_persistence.writer.metrics import PUBLISH_INTERVAL_S

# tools/other_writer.py, "another program": a script of its own, imported for its log reader.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import other_writer
import wal_index

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
OTHER_LOG = "other-program.writes.tsv"
CHECK_CHUNK_ROWS = 5000  # rows per read transaction of a check (see _rows)
MAX_DISCREPANCIES = 20  # kept for the report (the counts are always complete)
SHOWN_DISCREPANCIES = 8

# The soak, the other program and the sampler.
SOAK_MINUTES = 60.0
SOAK_CLIENT_SECONDS = 60.0  # each client records about this long (x 0.5-1.5); a new one takes its slot
SOAK_KILL_EVERY_S = 240.0  # a fault every few minutes: an hour sees about fifteen takeovers
SOAK_MAX_DB_MB = 8192  # past this, checked records are pruned: an hour at saturation writes tens of GB
MIN_CLIENT_SECONDS_LEFT = 2.0  # no replacement client starts this close to the end
MISSED_PUBLICATION_GAP_S = 1.9 * PUBLISH_INTERVAL_S  # wall-clock slack below two intervals
COUNTER_POLL_S = 0.25  # the writer publishes about once a second: four looks catch each publication
SAMPLE_EVERY_S = 1.0
SERIES_EVERY_S = 300.0
FAULT_SETTLE_S = 1.0  # this long after a fault ends, writes of the other program still count as in it
RSS_MIN_LIFE_S = 60.0  # a writer that lived shorter than this says nothing about growth
RSS_GROWTH_TOLERANCE_BYTES = 4 * 1024 * 1024
RSS_GROWTH_TOLERANCE_FRACTION = 0.05
PRUNE_STEP_S = 2.0  # one prune deletes at most this much creation time, so its transaction stays short
PRUNE_MIN_INTERVAL_S = 1.0
PRUNE_MARGIN_S = 2.0  # slack between a client process's start and the created_at of its first record
CHECK_TIMEOUT_S = 900.0  # the checker's backlog at the end of a soak
OTHER_EXIT_TIMEOUT_S = other_writer.DEFAULT_BUSY_TIMEOUT_S + 15  # its last write may wait that long
# Counters a writer may publish beyond commit_us_max/commit_us_mean; read when present.
HOLD_US_MAX = "writer.hold_us_max"  # longest time the write lock was held, per publication
LOCK_WAIT_US_MAX = "writer.lock_wait_us_max"  # longest BEGIN IMMEDIATE wait, per publication
# writer.<family>_bucket_<upper µs, or inf>: lifetime counts of batch commits (commit_us)
# and of write-lock holds (hold_us) no longer than that upper bound and longer than the one below.
HISTOGRAMS = ("commit_us", "hold_us")

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
    # A client registers again as a new instance when the file lacks what it confirmed of it (or
    # a writer killed before committing its hello answers "unknown"): what it resends then
    # carries the new id. Every id it had is where its records may be.
    instance_ids = [client.instance_id]
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
        if args.lifetime:  # a soak's client: its own span, within the run's
            deadline = min(started + args.lifetime, float(go["end_mono"]))
        n = 0
        while time.monotonic() < deadline:
            recorder.one_workflow(n)
            n += 1
            if client.instance_id != instance_ids[-1]:
                instance_ids.append(client.instance_id)
            if client.stats.buffered > args.max_buffered:  # hold back rather than fill the outbox
                waited = time.monotonic()
                while client.stats.buffered > args.max_buffered // 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                throttled_s += time.monotonic() - waited
    except Exception:
        log.exception("client %s failed while recording", label)
        result["error"] = traceback.format_exc()
        code = 1
    # The supervisor starts this slot's next client now: the load goes on while this one flushes.
    (run_dir / f"client-{label}.recorded").touch()
    result["recording_s"] = round(time.monotonic() - started, 3)
    result["throttled_s"] = round(throttled_s, 3)
    flush_started = time.monotonic()
    result["flushed"] = client.flush(args.flush_timeout)
    result["flush_s"] = round(time.monotonic() - flush_started, 3)
    result["closed"] = client.close(timeout=10.0)
    if client.instance_id != instance_ids[-1]:
        instance_ids.append(client.instance_id)
    result["instance_ids"] = instance_ids
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
        """Start one client-role process of this very script (recording `lifetime` s, if given)."""
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
    until_s: float | None = None  # when the supervisor was done with it (a new writer held the lease)


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
        # Client lifetimes draw from a generator of their own: the faults of a seed stay the same.
        self.life_rng = random.Random(f"{args.seed}-lifetimes")
        self.labels: list[str] = []  # every client started, in order
        self.started_wall: dict[str, float] = {}  # label -> wall time just before its process started
        self.slots: list[Child | None] = []  # the client recording in each slot (soak: replaced)
        self.generations: list[int] = []
        self.finishing: list[Child] = []  # done recording, still flushing
        self.collected: set[str] = set()  # labels whose process exit was seen and handled
        self.failed_clients = 0
        self.sampler = Sampler(db, args.sample_every)
        self.checker: Checker | None = Checker(db, run_dir, args.keep_manifests) if args.soak else None
        if self.checker is not None:
            self.checker.start()  # idle until a client exits
        self.pruner: Pruner | None = (
            Pruner(db, args.max_db_mb * 1024 * 1024) if args.soak and args.max_db_mb > 0 else None
        )
        self.other: Child | None = None

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

    def _start_client(self, label: str) -> Child:
        """Start one client (a soak's with a lifetime of its own) and note when."""
        lifetime = self.life_rng.uniform(0.5, 1.5) * self.args.client_seconds if self.args.soak else None
        self.labels.append(label)
        self.started_wall[label] = time.time()
        return self.processes.start_client(label, self.args, lifetime)

    def start_clients(self) -> list[Child]:
        """Start the clients, wait until each has its Client, then tell them all to go."""
        labels = [f"c{i}" for i in range(self.args.clients)]
        clients = [self._start_client(label) for label in labels]

        def all_ready() -> bool:
            for child in clients:
                if not child.running():
                    raise RuntimeError(f"{child.name} exited early:\n{child.log_text()}")
            return all((self.run_dir / f"client-{label}.ready").exists() for label in labels)

        if not wait_until(all_ready, START_TIMEOUT_S):
            raise RuntimeError(f"the clients were not ready within {START_TIMEOUT_S} s")
        self.go_at = time.monotonic()
        go = {"seconds": self.args.seconds, "end_mono": self.go_at + self.args.seconds}
        _write_json_atomically(self.run_dir / "go.json", go)
        self.sampler.origin = self.go_at
        self.sampler.start()
        log.info("%d clients recording for %s s", len(clients), self.args.seconds)
        self.slots = list(clients)
        self.generations = [0] * len(clients)
        if self.args.other_interval > 0:
            self.other = self.processes.start_other_program(
                self.args, self.go_at, self.go_at + self.args.seconds
            )
        return clients

    def tend_clients(self, end: float) -> None:
        """Soak: replace each client that stopped recording; hand each one that exited to the checker."""
        assert self.checker is not None
        for slot, child in enumerate(self.slots):
            if child is None:
                continue
            label = child.name.removeprefix("client-")
            if child.running() and not (self.run_dir / f"client-{label}.recorded").exists():
                continue
            self.finishing.append(child)
            self.slots[slot] = None
            # A client that keeps failing at once must not become a fork loop.
            if end - time.monotonic() >= MIN_CLIENT_SECONDS_LEFT and self.failed_clients <= self.args.clients:
                self.generations[slot] += 1
                self.slots[slot] = self._start_client(f"c{slot}g{self.generations[slot]}")
        for child in list(self.finishing):
            if child.running():
                continue
            self.finishing.remove(child)
            self._collect(child)

    def _collect(self, child: Child) -> None:
        """A client process has exited: note a failure, and have its records checked (soak)."""
        label = child.name.removeprefix("client-")
        self.collected.add(label)
        code = child.process.returncode
        if code != 0:
            self.failed_clients += 1
            self.chaos.anomaly(f"{child.name} exited with {code} (see {child.log_path})")
        if self.checker is not None:
            self.checker.submit(label)

    def safe_cutoff_wall(self) -> float:
        """Records created before this wall time belong to clients already checked: prunable."""
        assert self.checker is not None
        checked = self.checker.checked_labels()
        unchecked = [self.started_wall[label] for label in self.labels if label not in checked]
        return (min(unchecked) if unchecked else time.time()) - PRUNE_MARGIN_S

    def run_soak(self) -> None:
        """Until the run's end: replace clients, prune what was checked, and fault now and then."""
        end = self.go_at + self.args.seconds
        next_fault = self.go_at + self._interval()
        while True:
            now = time.monotonic()
            if now >= end:
                break
            self.tend_clients(end)
            if self.pruner is not None:
                self.pruner.tick(self.safe_cutoff_wall(), self.elapsed(), self.go_at)
            if now >= next_fault:
                started = time.monotonic()
                self.one_fault()
                next_fault = started + self._interval()
                continue
            time.sleep(max(0.0, min(0.2, next_fault - now, end - now)))

    def wait_all_clients(self) -> None:
        """After the recording: every client still running flushes, closes and exits; then it is collected."""
        remaining = [
            c for c in self.processes.clients() if c.name.removeprefix("client-") not in self.collected
        ]
        self.wait_clients(remaining)
        for child in remaining:
            label = child.name.removeprefix("client-")
            self.collected.add(label)
            if self.checker is not None:
                self.checker.submit(label)

    def stop_other_program(self) -> None:
        """The other program stops by itself at the end of the recording; wait for it (bounded)."""
        if self.other is None:
            return
        if self.other.wait_exit(OTHER_EXIT_TIMEOUT_S) is None:
            self.chaos.anomaly("the other program did not stop at the end of the recording; killed")
            self.other.process.kill()
            self.other.wait_exit(KILLED_EXIT_TIMEOUT_S)

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
        action.until_s = round(self.elapsed(), 3)
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
                self.failed_clients += 1
                self.chaos.anomaly(f"{child.name} exited with {code} (see {child.log_path})")

    def measured(
        self,
        other_writes: list[other_writer.Write] | None,
        deleted: dict[str, int],
        prune_reports: int,
        page_size: int | None,
    ) -> dict[str, Any]:
        """The sampler's figures, the other program's and the soak's, for the report."""
        args, sampler = self.args, self.sampler
        figures: dict[str, Any] = {}
        if other_writes is not None:
            figures["other_program"] = other_program_figures(
                other_writes, self.go_at, self.chaos.actions, args.other_interval
            )
        figures |= {
            "wal": wal_figures(sampler.samples, page_size),
            "commits": commit_figures(sampler.publications),
            "writer_rss": rss_figures(sampler.samples),
            "series_every_s": args.series_every,
            "series": series(
                sampler.samples,
                sampler.publications,
                other_writes or [],
                self.go_at,
                args.series_every,
                args.seconds,
            ),
            "sampler": {
                "samples": len(sampler.samples),
                "publications": len(sampler.publications),
                "failed_looks": sampler.errors,
            },
        }
        if self.checker is not None:
            figures["soak"] = {
                "minutes": round(args.seconds / 60, 2),
                "client_seconds": args.client_seconds,
                "kill_every_s": args.kill_every,
                "checking_s": round(self.checker.busy_s, 1),
                "manifests_kept": args.keep_manifests,
            }
        if self.pruner is not None:
            figures["prune"] = {
                "cap_mb": args.max_db_mb,
                "began_at_s": self.pruner.began_at_s,
                "prunes": len(self.pruner.ids),
                "committed": prune_reports,
                "deleted": deleted,
            }
        return figures

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
# The supervisor: sampling, checking as the run goes, pruning what was checked
# ------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One look at the file and at the lease holder."""

    at_s: float  # seconds since go
    wal_bytes: int  # the -wal file's size: its high-water mark since the last truncation
    wal_frames: int | None  # the WAL's length now (wal-index header): what WAL_RESTART_PAGES bounds
    db_bytes: int
    pid: int | None
    epoch: int | None
    rss: int | None


@dataclass
class Publication:
    """One publication of the writer's counters: about a second of its work."""

    at_s: float  # when the sampler saw it, seconds since go
    published_us: int
    epoch: int
    values: dict[str, int]
    # Another publication may have come and gone unseen before this one (see Sampler), so its
    # batches are counted here while their longest duration is unknown.
    merged: bool


def _size(path: Path) -> int:
    """A file's size, 0 if it does not exist (the WAL between two lives of the file)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class Sampler(threading.Thread):
    """Polls the writer's published counters, and looks at the WAL, the file and the writer's RSS."""

    def __init__(self, db: Path, sample_every: float) -> None:
        """Sample `db` and its writers until stop()."""
        super().__init__(daemon=True, name="chaos-sampler")
        self.db = db
        self.sample_every = sample_every
        self.origin = time.monotonic()  # set to the go time before start()
        self.samples: list[Sample] = []
        self.publications: list[Publication] = []
        self.errors = 0
        self._stop_event = threading.Event()
        self._processes: dict[int, psutil.Process] = {}
        self._last_key: tuple[int, int] | None = None
        self._last_published: dict[int, int] = {}  # epoch -> published_at_us last seen

    def run(self) -> None:
        """Sample until stopped; a failed look is counted and the next one tried."""
        reader = Reader(self.db)
        next_sample = time.monotonic()
        try:
            while not self._stop_event.is_set():
                self._poll_counters(reader)
                now = time.monotonic()
                if now >= next_sample:
                    self._sample(reader)
                    next_sample = max(next_sample + self.sample_every, now)
                self._stop_event.wait(COUNTER_POLL_S)
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop sampling (bounded join); a sampler never started is left alone."""
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=10)

    def _poll_counters(self, reader: Reader) -> None:
        try:
            rows = reader.query("SELECT name, value FROM counters WHERE name LIKE 'writer.%'")
        except (FileNotFoundError, sqlite3.Error, ValueError):
            self.errors += 1
            return
        now = time.monotonic()
        values = {str(name): int(value) for name, value in rows if isinstance(value, int)}
        epoch, published = values.get("writer.epoch"), values.get("writer.published_at_us")
        if epoch is None or published is None or (epoch, published) == self._last_key:
            return
        self._last_key = (epoch, published)
        # A writer publishes at least PUBLISH_INTERVAL_S apart, from its start on: a publication
        # can have been missed only if this one is two intervals past the previous one seen (or
        # past the writer's start). Only then are its batches' durations taken as unknown.
        previous = self._last_published.get(epoch, values.get("writer.started_at_us", published))
        self._last_published[epoch] = published
        merged = published - previous >= MISSED_PUBLICATION_GAP_S * 1_000_000
        self.publications.append(Publication(round(now - self.origin, 3), published, epoch, values, merged))

    def _sample(self, reader: Reader) -> None:
        status = writer_status(reader)
        pid = status.pid if status is not None else None
        rss = None
        if pid is not None:
            try:
                process = self._processes.get(pid) or psutil.Process(pid)
                self._processes[pid] = process
                rss = int(process.memory_info().rss)
            except psutil.Error:
                rss = None
        length = wal_index.read(self.db)
        self.samples.append(
            Sample(
                round(time.monotonic() - self.origin, 3),
                _size(Path(f"{self.db}-wal")),
                length.frames if length is not None else None,
                _size(self.db),
                pid,
                status.epoch if status is not None else None,
                rss,
            )
        )


RECORD_LISTS = ("workflows", "tasks", "events", "workflow_fields", "task_fields", "event_fields")


class Checker(threading.Thread):
    """Soak: checks each client's records as soon as its process has exited, off the supervisor's loop.

    A client that has exited has flushed and closed: every record it asked for is committed
    and final, and none can follow. Checked then, its manifest need not be kept (nor held in
    memory) for an end-of-run check, and its records may be pruned.
    """

    def __init__(self, db: Path, run_dir: Path, keep_manifests: bool) -> None:
        """Check manifests of `run_dir` against `db` as they are submitted."""
        super().__init__(daemon=True, name="chaos-checker")
        self.db = db
        self.run_dir = run_dir
        self.keep_manifests = keep_manifests
        self.total = Verification()
        self.summaries: list[dict[str, Any]] = []  # each manifest without its record lists
        self.missing: list[str] = []
        self.busy_s = 0.0
        self._checked: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()

    def submit(self, label: str) -> None:
        """Check this client's manifest (its process has exited)."""
        self._queue.put(label)

    def checked_labels(self) -> set[str]:
        """The clients checked so far."""
        with self._lock:
            return set(self._checked)

    def finish(self, timeout: float) -> bool:
        """Check what was submitted, then stop; False if that took longer than `timeout`."""
        self._queue.put(None)
        self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        """Check one submitted client after another."""
        while True:
            label = self._queue.get()
            if label is None:
                return
            started = time.monotonic()
            try:
                self._check(label)
            except Exception as exc:  # reported as a discrepancy; the run goes on
                log.exception("checking client %s failed", label)
                with self._lock:
                    self.total.note(f"checking client {label} failed: {exc}")
                    self.missing.append(label)
                    self._checked.add(label)
            self.busy_s += time.monotonic() - started

    def _check(self, label: str) -> None:
        path = self.run_dir / f"client-{label}.manifest.json"
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (FileNotFoundError, ValueError) as exc:
            log.error("no usable manifest %s: %s", path, exc)
            with self._lock:
                self.missing.append(label)
                self._checked.add(label)
            return
        v = Verification()
        with read_only(self.db) as conn:
            verify_clients(conn, [manifest], v)
        summary = {k: value for k, value in manifest.items() if k not in RECORD_LISTS}
        with self._lock:
            self.total.merge(v)
            self.summaries.append(summary)
            self._checked.add(label)
        if v.clean() and not self.keep_manifests:
            path.unlink()  # an hour of manifests would take as much disk as the database
        log.info(
            "client %s checked: %s", label, "ok" if v.clean() else f"{v.discrepancy_count} discrepancies"
        )


class Pruner:
    """Soak: once the file passes its cap, prune records already checked through `Client.prune`.

    The product's own retention, as an app would run it. Each prune moves the cutoff on by at
    most PRUNE_STEP_S of creation time, never past the start of a client not yet checked, and
    waits for the previous one to commit, so no transaction deletes much at once.
    """

    def __init__(self, db: Path, cap_bytes: int) -> None:
        """Prune `db` once it (with its WAL) holds more than `cap_bytes`."""
        self.db = db
        self.cap_bytes = cap_bytes
        self.client: Client | None = None
        self.reader = Reader(db)
        self.cutoff_wall: float | None = None
        self.began_at_s: float | None = None
        self.ids: list[str] = []
        self.pending: str | None = None
        self.last_at = 0.0

    def tick(self, safe_cutoff_wall: float, elapsed_s: float, go_at: float) -> None:
        """Send the next prune if one is due."""
        if self.began_at_s is None:
            if _size(self.db) + _size(Path(f"{self.db}-wal")) < self.cap_bytes:
                return
            self.began_at_s = round(elapsed_s, 1)
            self.cutoff_wall = time.time() - elapsed_s  # the go time: nothing older is there
            log.info(
                "the file passed %d MB at %.0f s: pruning checked records", self.cap_bytes >> 20, elapsed_s
            )
        assert self.cutoff_wall is not None
        if self.pending is not None:
            try:
                if not self.reader.query("SELECT 1 FROM audit_events WHERE id = ?", (self.pending,)):
                    return  # the last prune is not committed yet
            except (FileNotFoundError, sqlite3.Error):
                return
            self.pending = None
        if time.monotonic() - self.last_at < PRUNE_MIN_INTERVAL_S:
            return
        cutoff = min(safe_cutoff_wall, self.cutoff_wall + PRUNE_STEP_S)
        if cutoff <= self.cutoff_wall:
            return
        if self.client is None:
            self.client = Client(self.db)
        self.pending = self.client.prune(max(0.0, time.time() - cutoff))
        self.ids.append(self.pending)
        self.cutoff_wall = cutoff
        self.last_at = time.monotonic()

    @property
    def instance_id(self) -> str | None:
        """The pruning Client's instance, if it was made."""
        return self.client.instance_id if self.client is not None else None

    def close(self, timeout: float) -> bool:
        """Flush the prunes sent (bounded) and close the Client; True if all were committed."""
        flushed = True
        if self.client is not None:
            flushed = self.client.flush(timeout)
            self.client.close(timeout=5.0)
        self.reader.close()
        return flushed


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

    def clean(self) -> bool:
        """Nothing lost, doubled, extra or changed, and no discrepancy noted."""
        return (
            self.discrepancy_count == 0
            and self.mismatched == 0
            and not any(self.total(what) for what in ("lost", "duplicated", "extra"))
        )

    def merge(self, other: Verification) -> None:
        """Add another check's counts (of other clients) to these."""
        for kind, counts in other.kinds.items():
            mine = self.kinds.setdefault(kind, KindCounts())
            for name in ("asked", "committed", "lost", "duplicated", "extra"):
                setattr(mine, name, getattr(mine, name) + getattr(counts, name))
        self.statuses_checked += other.statuses_checked
        self.mismatched += other.mismatched
        self.dead_letters += other.dead_letters
        self.instances_ended += other.instances_ended
        self.discrepancy_count += other.discrepancy_count
        room = MAX_DISCREPANCIES - len(self.discrepancies)
        self.discrepancies += other.discrepancies[: max(0, room)]


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


def _scope(scope: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause for the rows of these instances (all rows when None), and its parameters."""
    if scope is None:
        return "", ()
    return f" WHERE instance_id IN ({', '.join('?' * len(scope))})", tuple(scope)


def _rows(conn: sqlite3.Connection, table: str, columns: str, scope: list[str] | None) -> Iterator[Any]:
    """The rows of `table` (of these instances only, if given), read a chunk at a time.

    Each chunk is its own short read transaction. One long SELECT would hold one snapshot for
    as long as it runs, and while it does the writer's checkpoints cannot start the WAL over
    (sqlite.org wal.html, checkpoint starvation): a soak that checks as it goes would grow the
    very WAL it measures. The rows of an exited client no longer change, so chunks agree.
    One instance at a time: the index on instance_id then yields its rows in rowid order.
    """
    for where, params in [("", ())] if scope is None else [_scope([one]) for one in scope]:
        clause = f"{where} AND rowid > ?" if where else " WHERE rowid > ?"
        last = -(2**63)
        while True:
            rows = conn.execute(
                f"SELECT rowid, {columns} FROM {table}{clause} ORDER BY rowid LIMIT {CHECK_CHUNK_ROWS}",
                (*params, last),
            ).fetchall()
            if not rows:
                break
            for row in rows:
                yield row[1:]
            last = rows[-1][0]


def _verify_workflows(
    conn: sqlite3.Connection,
    manifests: list[dict[str, Any]],
    v: Verification,
    scope: list[str] | None = None,
    skip_prefix: str | None = None,
) -> None:
    """Every workflow asked for exists once, with its name, last status and last error.

    `scope`: only the rows of these instances are looked at. `skip_prefix`: rows named so are
    the other program's, checked by _verify_other.
    """
    expected = {row[0]: row for m in manifests for row in m["workflows"]}
    k = v.kinds["workflows"]
    k.asked = len(expected)
    names: Counter[str] = Counter()
    found: set[str] = set()
    for row in _rows(conn, "workflow_executions", "id, workflow_name, status, error_message", scope):
        if skip_prefix is not None and row[1].startswith(skip_prefix):
            continue
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


def _verify_tasks(
    conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification, scope: list[str] | None = None
) -> None:
    """Every task asked for exists once, with its fields, last status and its log lines in order."""
    expected = {row[0]: row for m in manifests for row in m["tasks"]}
    k = v.kinds["tasks"]
    k.asked = len(expected)
    v.kinds["log_lines"].asked = sum(len(row[7]) for row in expected.values())
    names: Counter[str] = Counter()
    found: set[str] = set()
    columns = "id, workflow_id, task_name, execution_order, status, output, error_message, logs"
    for row in _rows(conn, "task_executions", columns, scope):
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


def _verify_events(
    conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification, scope: list[str] | None = None
) -> None:
    """Every audit event asked for exists once, with its type, message and links."""
    expected = {row[0]: row for m in manifests for row in m["events"]}
    k = v.kinds["events"]
    k.asked = len(expected)
    messages: Counter[str] = Counter()
    found: set[str] = set()
    for row in _rows(conn, "audit_events", "id, event_type, message, workflow_id, task_id", scope):
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


def _verify_other(conn: sqlite3.Connection, writes: list[other_writer.Write], v: Verification) -> None:
    """The other program's rows: each write that returned ok is there once, unchanged; no other."""
    k = v.kinds.setdefault("other_program", KindCounts())
    asked = {w.id: w.name for w in writes if w.ok}
    failed = {w.id for w in writes if not w.ok}
    k.asked = len(asked)
    prefix = other_writer.DEFAULT_PREFIX
    names: Counter[str] = Counter()
    found: set[str] = set()
    # Its rows have no instance: the seed's index on instance_id finds them without a scan.
    for record_id, name, status, metadata in conn.execute(
        "SELECT id, workflow_name, status, metadata FROM workflow_executions WHERE instance_id IS NULL"
    ):
        if not name.startswith(prefix):
            continue  # not the other program's (unattributed rows are counted by verify_rest)
        names[name] += 1
        if record_id not in asked:
            k.extra += 1
            why = "a write that reported an error is there" if record_id in failed else "never written"
            v.note(f"other program: extra {record_id} {name!r} ({why})")
            continue
        found.add(record_id)
        if (name, status, metadata) != (asked[record_id], "pending", "{}"):
            v.mismatched += 1
            v.note(f"other program: {record_id} is {(name, status, metadata)}, written {asked[record_id]!r}")
    k.committed = len(found)
    k.lost = k.asked - k.committed
    for record_id in list(asked.keys() - found)[:3]:
        v.note(f"other program: lost {record_id} {asked[record_id]!r}")
    _check_duplicates(v, "other_program", set(asked.values()), names)


def _dead_letters_and_integrity(conn: sqlite3.Connection, v: Verification) -> None:
    v.dead_letters = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    for instance_id, seq, reason in conn.execute(
        "SELECT instance_id, seq, reason FROM dead_letters ORDER BY id LIMIT 3"
    ):
        v.note(f"dead letter from {instance_id} seq {seq}: {reason}")
    v.integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))


def verify(
    db: Path, manifests: list[dict[str, Any]], other_writes: list[other_writer.Write] | None = None
) -> Verification:
    """Check the whole database against what the clients (and the other program) asked for, read-only."""
    v = Verification()
    with read_only(db) as conn:
        skip = other_writer.DEFAULT_PREFIX if other_writes is not None else None
        _verify_workflows(conn, manifests, v, skip_prefix=skip)
        _verify_tasks(conn, manifests, v)
        _verify_events(conn, manifests, v)
        if other_writes is not None:
            _verify_other(conn, other_writes, v)
        ended = {row[0] for row in conn.execute("SELECT id FROM instances WHERE state = 'ended'")}
        v.instances_ended = sum(
            1 for m in manifests if any(i in ended for i in m.get("instance_ids", [m.get("instance_id")]))
        )
        _dead_letters_and_integrity(conn, v)
    return v


def verify_clients(conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification) -> None:
    """Check the rows of these clients' instances only (soak: each client once it has exited)."""
    scope = [str(i) for m in manifests for i in m.get("instance_ids", [m["instance_id"]])]
    _verify_workflows(conn, manifests, v, scope)
    _verify_tasks(conn, manifests, v, scope)
    _verify_events(conn, manifests, v, scope)
    where, params = _scope(scope)
    v.instances_ended += conn.execute(
        "SELECT COUNT(*) FROM instances" + where.replace("instance_id", "id") + " AND state = 'ended'", params
    ).fetchone()[0]


def verify_rest(
    db: Path,
    known_instances: set[str],
    other_writes: list[other_writer.Write] | None,
    pruner_instance: str | None,
    prune_ids: list[str],
    v: Verification,
) -> tuple[dict[str, int], int]:
    """Soak, at the end: no row of an instance nobody started, the other program's rows, the
    prune reports, dead letters and integrity. Returns what the prunes deleted, and how many
    of them committed."""
    known = sorted(known_instances | ({pruner_instance} if pruner_instance else set()))
    marks = ", ".join("?" * len(known))
    with read_only(db) as conn:
        for kind, table in (("workflows", "workflow_executions"), ("tasks", "task_executions")):
            extra = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE instance_id NOT IN ({marks})", known
            ).fetchone()[0]
            if kind == "tasks":  # the other program writes no tasks
                extra += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE instance_id IS NULL").fetchone()[0]
            else:  # its rows have no instance; any other row without one is extra
                extra += sum(
                    1
                    for (name,) in conn.execute(
                        f"SELECT workflow_name FROM {table} WHERE instance_id IS NULL"
                    )
                    if other_writes is None or not name.startswith(other_writer.DEFAULT_PREFIX)
                )
            if extra:
                v.kinds[kind].extra += extra
                v.note(f"{kind}: {extra} rows of no instance this run started")
        extra = conn.execute(
            f"SELECT COUNT(*) FROM audit_events WHERE instance_id IS NULL OR instance_id NOT IN ({marks})",
            known,
        ).fetchone()[0]
        if extra:
            v.kinds["events"].extra += extra
            v.note(f"events: {extra} rows of no instance this run started")
        deleted: Counter[str] = Counter()
        reports = 0
        if pruner_instance is not None:
            asked = set(prune_ids)
            for record_id, event_type, data in conn.execute(
                "SELECT id, event_type, data FROM audit_events WHERE instance_id = ?", (pruner_instance,)
            ):
                if record_id not in asked or event_type != "prune":
                    v.kinds["events"].extra += 1
                    v.note(f"events: {record_id} ({event_type}) of the pruning client is not a prune report")
                    continue
                reports += 1
                deleted.update({k: int(n) for k, n in json.loads(data).items() if isinstance(n, int)})
        if other_writes is not None:
            _verify_other(conn, other_writes, v)
        _dead_letters_and_integrity(conn, v)
    return dict(deleted), reports


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, float | None]:
    """min, median and max of `values` (None when empty)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _ms_of(values_ns: list[int]) -> dict[str, float | None]:
    """p50 / p99 / p99.9 / max in milliseconds (nearest rank)."""
    ordered = sorted(values_ns)

    def ms(fraction: float) -> float | None:
        value = other_writer.quantile(ordered, fraction)
        return None if value is None else round(value / 1e6, 3)

    return {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": ms(1.0)}


def _fault_windows(actions: list[Action]) -> list[tuple[float, float]]:
    """(from, to) seconds since go of each fault, to its takeover and FAULT_SETTLE_S beyond."""
    return [(a.at_s, (a.until_s if a.until_s is not None else a.at_s) + FAULT_SETTLE_S) for a in actions]


def other_program_figures(
    writes: list[other_writer.Write], go_at: float, actions: list[Action], interval_s: float
) -> dict[str, Any]:
    """The other program's writes: counts, errors, waits, and waits outside the faults."""
    windows = _fault_windows(actions)

    def in_fault(w: other_writer.Write) -> bool:
        start = w.at - go_at
        end = start + w.wait_ns / 1e9
        return any(start < hi and end > lo for lo, hi in windows)

    outside = [w for w in writes if not in_fault(w)]
    errors = [w for w in writes if not w.ok]
    slowest = sorted(writes, key=lambda w: w.wait_ns, reverse=True)[:3]
    return {
        "interval_s": interval_s,
        "writes": len(writes),
        "errors": len(errors),
        "first_errors": [f"at {w.at - go_at:.1f} s: {w.error[:200]}" for w in errors[:5]],
        "wait_ms": _ms_of([w.wait_ns for w in writes]),
        "outside_faults": {"writes": len(outside), "wait_ms": _ms_of([w.wait_ns for w in outside])},
        "slowest": [
            {"at_s": round(w.at - go_at, 2), "wait_ms": round(w.wait_ns / 1e6, 1), "in_fault": in_fault(w)}
            for w in slowest
        ],
    }


def _deltas(publications: list[Publication]) -> list[tuple[Publication, int, int]]:
    """Each publication with the batches and operations it covers (its totals minus the previous ones)."""
    out: list[tuple[Publication, int, int]] = []
    last: dict[int, tuple[int, int]] = {}  # epoch -> (batches_total, operations_total)
    for p in sorted(publications, key=lambda p: (p.epoch, p.published_us)):
        batches, ops = p.values.get("writer.batches_total", 0), p.values.get("writer.operations_total", 0)
        before = last.get(p.epoch, (0, 0))  # a writer's totals start at zero with its epoch
        out.append((p, max(0, batches - before[0]), max(0, ops - before[1])))
        last[p.epoch] = (batches, ops)
    return sorted(out, key=lambda item: item[0].at_s)


def _p999_bound(rows: list[tuple[int, int, bool]], total: int) -> int | None:
    """An upper bound of the p99.9 batch commit from (interval max, batches, merged) per publication.

    Every commit longer than v lies in an interval whose max exceeds v. So if the batches of
    those intervals (and of every merged one, whose durations are unknown) are at most 0.1 %
    of all, at least 99.9 % of the commits took v or less: p99.9 <= v. The smallest such v.
    """
    if total == 0:
        return None
    budget = 0.001 * total
    excess = sum(batches for _, batches, merged in rows if merged)
    if excess > budget:
        return None
    by_max: Counter[int] = Counter()
    for longest, batches, merged in rows:
        if not merged:
            by_max[longest] += batches
    bound = None
    for value in sorted(by_max, reverse=True):
        if excess > budget:
            break
        bound = value  # the commits above `value` number `excess` at most
        excess += by_max[value]
    return bound


def _histogram_quantile(buckets: dict[str, int], fraction: float) -> tuple[int | None, int]:
    """The upper bound (µs; None for the open bucket) of the bucket holding that quantile, and the count."""
    finite = sorted((int(k), n) for k, n in buckets.items() if k.isdigit())
    ordered = [*finite, (None, buckets.get("inf", 0))]
    total = sum(n for _, n in ordered)
    if total == 0:
        return None, 0
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for upper, n in ordered:
        seen += n
        if seen >= rank:
            return upper, total
    return None, total


def commit_figures(publications: list[Publication]) -> dict[str, Any]:
    """The longest batch commit and the p99.9, from what the writers published."""
    deltas = _deltas(publications)
    total = sum(batches for _, batches, _ in deltas)
    figures: dict[str, Any] = {
        "publications": len(publications),
        "merged_publications": sum(1 for p in publications if p.merged),
        "batches": total,
        "longest_us": None,
        "p999_us_at_most": None,
        "p999_us": None,
        "hold_us_max": None,
        "lock_wait_us_max": None,
    }
    if not deltas:
        return figures
    longest = max(deltas, key=lambda item: item[0].values.get("writer.commit_us_max", 0))[0]
    figures["longest_us"] = longest.values.get("writer.commit_us_max")
    figures["longest_at_s"] = longest.at_s
    figures["longest_epoch"] = longest.epoch
    weighted = sum(p.values.get("writer.commit_us_mean", 0) * batches for p, batches, _ in deltas)
    figures["mean_us"] = round(weighted / total) if total else None
    figures["p999_us_at_most"] = _p999_bound(
        [(p.values.get("writer.commit_us_max", 0), batches, p.merged) for p, batches, _ in deltas], total
    )
    for key, name in (("hold_us_max", HOLD_US_MAX), ("lock_wait_us_max", LOCK_WAIT_US_MAX)):
        seen = [p.values[name] for p in publications if name in p.values]
        figures[key] = max(seen) if seen else None
    # Histograms, if the writers publish them: each writer's last totals, summed over writers
    # (a killed writer's last second is missing from them, as from every total).
    last: dict[int, Publication] = {}
    for p in publications:
        if p.epoch not in last or p.published_us > last[p.epoch].published_us:
            last[p.epoch] = p
    for family in HISTOGRAMS:
        prefix = f"writer.{family}_bucket_"
        buckets: Counter[str] = Counter()
        for p in last.values():
            for name, value in p.values.items():
                if name.startswith(prefix):
                    buckets[name[len(prefix) :].removesuffix("_total")] += value
        if buckets:
            upper, counted = _histogram_quantile(dict(buckets), 0.999)
            key = "p999_us" if family == "commit_us" else "hold_p999_us"
            figures[key] = upper if upper is not None else "beyond the last bucket"
            figures[f"{family}_histogram"] = dict(buckets)
            figures[f"{family}_histogram_count"] = counted
    return figures


def wal_figures(samples: list[Sample], page_size: int | None) -> dict[str, Any]:
    """The WAL's peak length against the writer's restart point; the -wal file's and the database's size.

    The length is in frames (one page each), read from the wal-index: the -wal file itself is
    truncated only down to journal_size_limit after a restart, so its size stays at its peak.
    """
    framed = [s for s in samples if s.wal_frames is not None]
    peak = max(framed, key=lambda s: s.wal_frames or 0, default=None)
    return {
        "peak_frames": peak.wal_frames if peak else None,
        "peak_bytes": (peak.wal_frames or 0) * page_size if peak and page_size else None,
        "peak_at_s": peak.at_s if peak else None,
        "bound_pages": WAL_RESTART_PAGES,
        "bound_bytes": WAL_RESTART_PAGES * page_size if page_size else None,
        "page_size": page_size,
        "samples_over_bound": sum(1 for s in framed if (s.wal_frames or 0) > WAL_RESTART_PAGES),
        "samples": len(framed),
        "file_peak_bytes": max((s.wal_bytes for s in samples), default=None),
        "db_bytes_end": samples[-1].db_bytes if samples else None,
        "db_bytes_peak": max((s.db_bytes for s in samples), default=None),
    }


def rss_figures(samples: list[Sample]) -> dict[str, Any]:
    """The lease holder's RSS per writer, and whether a long-lived writer's grows."""
    by_pid: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.pid is not None and sample.rss is not None:
            by_pid.setdefault(sample.pid, []).append(sample)
    writers = []
    for pid, points in by_pid.items():
        rss = [p.rss for p in points if p.rss is not None]
        life = points[-1].at_s - points[0].at_s
        entry: dict[str, Any] = {
            "pid": pid,
            "epoch": points[0].epoch,
            "from_s": points[0].at_s,
            "to_s": points[-1].at_s,
            "samples": len(points),
            "min_mb": round(min(rss) / 2**20, 1),
            "max_mb": round(max(rss) / 2**20, 1),
            "verdict": "too short",
        }
        if life >= RSS_MIN_LIFE_S and len(rss) >= 9:
            third = len(rss) // 3
            first, last = statistics.median(rss[:third]), statistics.median(rss[-third:])
            tolerance = max(RSS_GROWTH_TOLERANCE_BYTES, RSS_GROWTH_TOLERANCE_FRACTION * first)
            entry["first_third_mb"] = round(first / 2**20, 1)
            entry["last_third_mb"] = round(last / 2**20, 1)
            entry["growth_mb"] = round((last - first) / 2**20, 1)
            entry["verdict"] = "grows" if last - first > tolerance else "flat"
        writers.append(entry)
    judged = [w for w in writers if w["verdict"] != "too short"]
    verdict = (
        "grows"
        if any(w["verdict"] == "grows" for w in judged)
        else ("flat" if judged else f"not judged: no writer held the lease {RSS_MIN_LIFE_S:.0f} s")
    )
    longest = max(writers, key=lambda w: w["to_s"] - w["from_s"], default=None)
    return {
        "peak_mb": max((w["max_mb"] for w in writers), default=None),
        "verdict": verdict,
        "longest_lived": longest,
        "writers": writers,
    }


def series(
    samples: list[Sample],
    publications: list[Publication],
    writes: list[other_writer.Write],
    go_at: float,
    window_s: float,
    duration_s: float,
) -> list[dict[str, Any]]:
    """Per window of `window_s`: committed ops/s, WAL peak, longest commit, the other program's
    waits, and each writer's RSS range."""
    windows = max(1, math.ceil(duration_s / window_s))
    deltas = _deltas(publications)
    out = []
    for i in range(windows):
        lo, hi = i * window_s, (i + 1) * window_s
        last = i == windows - 1  # the last window takes whatever comes after (flushing, stopping)
        inside = [s for s in samples if lo <= s.at_s < hi or (last and s.at_s >= hi)]
        pubs = [(p, b, o) for p, b, o in deltas if lo <= p.at_s < hi or (last and p.at_s >= hi)]
        waits = [w for w in writes if lo <= w.at - go_at < hi or (last and w.at - go_at >= hi)]
        rss: dict[int, list[int]] = {}
        for s in inside:
            if s.pid is not None and s.rss is not None:
                rss.setdefault(s.pid, []).append(s.rss)
        out.append(
            {
                "from_s": lo,
                "committed_ops_per_s": round(sum(o for _, _, o in pubs) / window_s) if pubs else None,
                "wal_max_frames": max((s.wal_frames or 0 for s in inside), default=None),
                "commit_us_max": max(
                    (p.values.get("writer.commit_us_max", 0) for p, _, _ in pubs), default=None
                ),
                "other_writes": len(waits),
                "other_errors": sum(1 for w in waits if not w.ok),
                "other_wait_ms": _ms_of([w.wait_ns for w in waits]) if waits else None,
                "writers_rss_mb": {
                    str(pid): [round(min(v) / 2**20, 1), round(max(v) / 2**20, 1)] for pid, v in rss.items()
                },
            }
        )
    return out


def build_report(
    args: argparse.Namespace,
    run_dir: Path,
    db: Path,
    duration_s: float,
    manifests: list[dict[str, Any]],
    chaos: Chaos,
    writer_exits: dict[str, Any],
    v: Verification,
    *,
    clients_started: int | None = None,
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the run measured, as one JSON-able dict.

    `measured`: the sampler's and the other program's figures (other_program, wal, commits,
    writer_rss, series) and the soak's (soak, prune), added as they are.
    """
    measured = measured or {}
    stats = [m.get("stats", {}) for m in manifests]
    operations = sum(m.get("operations", 0) for m in manifests)
    recording_s = max((m.get("recording_s", 0.0) for m in manifests), default=0.0)
    if args.soak:  # each client recorded a part of the run; together, all of it
        recording_s = args.seconds
    other = measured.get("other_program")
    kills = [a for a in chaos.actions if a.kind == "kill"]
    stops = [a for a in chaos.actions if a.kind == "stop"]
    problems = list(chaos.anomalies)
    for m in manifests:
        if not m.get("flushed"):
            problems.append(f"client {m['label']}: flush did not confirm everything")
        if m.get("error"):
            problems.append(f"client {m['label']}: {m['error'].strip().splitlines()[-1]}")
        ids = m.get("instance_ids")
        if ids is not None and m.get("stats", {}).get("registrations", 0) > len(ids) - 1:
            problems.append(f"client {m['label']}: registered again more often than its ids were seen: {ids}")
        if m.get("stats", {}).get("dropped"):
            problems.append(f"client {m['label']}: its outbox dropped {m['stats']['dropped']} operations")
    missing = (clients_started if clients_started is not None else args.clients) - len(manifests)
    if missing:
        problems.append(f"{missing} client(s) wrote no manifest")
    if v.integrity != "ok":
        problems.append(f"integrity_check: {v.integrity[:200]}")
    if other is not None and other["errors"]:
        problems.append(f"the other program saw {other['errors']} errors: {other['first_errors'][0]}")
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
        "clients_started": clients_started if clients_started is not None else args.clients,
        "duration_s": round(duration_s, 1),
        "recording_s": round(recording_s, 1),
        "operations": operations,
        "ops_per_s": round(operations / recording_s) if recording_s else 0,
        "status_updates": sum(m.get("status_updates", 0) for m in manifests),
        "records": {kind: dataclasses.asdict(counts) for kind, counts in v.kinds.items()},
        "resent": sum(s.get("resent", 0) for s in stats),
        "reconnects": sum(s.get("reconnects", 0) for s in stats),
        "registered_again": sum(s.get("registrations", 0) for s in stats),
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
        **measured,
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


def _mb(value: float | None) -> str:
    """Bytes as MB, or n/a."""
    return "n/a" if value is None else f"{value / 2**20:,.1f} MB"


def _us(value: float | str | None) -> str:
    """Microseconds as milliseconds, or n/a (or the text given)."""
    if value is None or isinstance(value, str):
        return value or "n/a"
    return f"{value / 1000:,.1f} ms"


def _waits(ms: dict[str, float | None] | None) -> str:
    """p50 / p99 / p99.9 / max in ms."""
    if not ms or ms["p50"] is None:
        return "n/a"
    return " / ".join(f"{value:,.1f}" for value in ms.values() if value is not None) + " ms"


def _measured_lines(r: dict[str, Any]) -> list[str]:
    """The other program, the WAL, the commits, the writer's RSS, the prunes and the series."""
    lines = []
    other = r.get("other_program")
    if other is not None:
        lines += [
            f"  other prog.  {other['writes']:,} writes, one every {other['interval_s'] * 1000:g} ms (plain"
            f" sqlite3, busy timeout {other_writer.DEFAULT_BUSY_TIMEOUT_S:g} s), {other['errors']} errors;"
            f" wait p50 / p99 / p99.9 / max {_waits(other['wait_ms'])}",
            f"               outside the faults ({other['outside_faults']['writes']:,} writes)"
            f" {_waits(other['outside_faults']['wait_ms'])}; slowest "
            + ", ".join(
                f"{w['wait_ms']:,.0f} ms at {w['at_s']:.0f} s{' (fault)' if w['in_fault'] else ''}"
                for w in other["slowest"]
            ),
        ]
        lines += [f"               error: {text}" for text in other["first_errors"][:3]]
    wal = r.get("wal")
    if wal is not None and wal["peak_frames"] is not None:
        lines.append(
            f"  WAL          peak {wal['peak_frames']:,} frames ({_mb(wal['peak_bytes'])} of pages) at"
            f" {wal['peak_at_s']:.0f} s; bound {wal['bound_pages']:,} pages ({_mb(wal['bound_bytes'])}, where"
            f" the writer checkpoints), passed in {wal['samples_over_bound']} of {wal['samples']} samples;"
            f" the -wal file at most {_mb(wal['file_peak_bytes'])}; the database {_mb(wal['db_bytes_end'])}"
            " at the end"
        )
    commits = r.get("commits")
    if commits is not None and commits["longest_us"] is not None:
        bound = (
            f"p99.9 {_us(commits['p999_us'])} (the upper bound of its bucket in the writers' histogram"
            f" of {commits['commit_us_histogram_count']:,} batches)"
            if commits["p999_us"] is not None
            else f"p99.9 <= {_us(commits['p999_us_at_most'])} (a bound from the per-second maxima)"
            if commits["p999_us_at_most"] is not None
            else "p99.9 not bounded (too few batches, or too many in publications possibly missed)"
        )
        lines += [
            f"  commits      longest batch commit {_us(commits['longest_us'])}"
            f" (at {commits['longest_at_s']:.0f} s, epoch {commits['longest_epoch']}); {bound};"
            f" mean {_us(commits['mean_us'])};"
            f" {commits['batches']:,} batches in {commits['publications']:,} publications"
            f" ({commits['merged_publications']} merged)",
        ]
        if commits["hold_us_max"] is not None:
            hold_p999 = commits.get("hold_p999_us")
            lines.append(
                f"  transaction  longest write-lock hold {_us(commits['hold_us_max'])}"
                + (f", p99.9 {_us(hold_p999)} (histogram)" if hold_p999 is not None else "")
                + f"; longest wait for the lock {_us(commits['lock_wait_us_max'])}"
            )
        else:
            lines.append(
                "  transaction  the writer publishes no lock-hold time: the longest transaction shown is its"
                " longest batch commit, BEGIN IMMEDIATE's wait for the lock included"
            )
    elif commits is not None:
        lines.append("  commits      the writer published no commit_us_max: not measured")
    rss = r.get("writer_rss")
    if rss is not None and rss["longest_lived"] is not None:
        w = rss["longest_lived"]
        growth = (
            f", first third {w['first_third_mb']} MB, last third {w['last_third_mb']} MB"
            f" ({w['growth_mb']:+} MB)"
            if "growth_mb" in w
            else ""
        )
        lines.append(
            f"  writer RSS   {rss['verdict']}; peak {rss['peak_mb']} MB; longest-lived writer pid {w['pid']}"
            f" (epoch {w['epoch']}), {w['to_s'] - w['from_s']:.0f} s: {w['min_mb']}-{w['max_mb']} MB{growth}"
        )
    prune = r.get("prune")
    if prune is not None:
        if prune["began_at_s"] is None:
            lines.append(f"  prunes       none: the file stayed under {prune['cap_mb']:,} MB")
        else:
            d = prune["deleted"]
            lines.append(
                f"  prunes       from {prune['began_at_s']:.0f} s (the file passed {prune['cap_mb']:,} MB):"
                f" {prune['prunes']:,} prunes ({prune['committed']:,} committed) deleted"
                f" {d.get('workflow_executions', 0):,} workflows, {d.get('task_executions', 0):,} tasks,"
                f" {d.get('audit_events', 0):,} events"
            )
    soak = r.get("soak")
    if soak is not None:
        lines.append(
            f"  soak         {soak['minutes']:g} min at saturation; clients of"
            f" ~{soak['client_seconds']:g} s each,"
            f" {r['clients_started']} in all; checked as they exited ({soak['checking_s']:.0f} s of checking)"
        )
    rows = r.get("series") or []
    if rows:
        window = r["series_every_s"]
        lines.append(
            f"  over time    per {window:g} s: from | committed ops/s | WAL frames max | longest commit |"
            " other wait p99 / max (errors) | writer RSS MB, pid: min-max"
        )
        for row in rows:
            waits = row["other_wait_ms"]
            other_text = (
                f"{waits['p99']:,.1f} / {waits['max']:,.1f} ms ({row['other_errors']})" if waits else "-"
            )
            ops, frames = row["committed_ops_per_s"], row["wal_max_frames"]
            lines.append(
                f"    {row['from_s']:>6.0f} s {'n/a' if ops is None else f'{ops:,}':>10}"
                f" {'n/a' if frames is None else f'{frames:,}':>8}"
                f" {_us(row['commit_us_max']):>10} {other_text:>22}  "
                + "; ".join(f"{pid}: {lo}-{hi}" for pid, (lo, hi) in row["writers_rss_mb"].items())
            )
    return lines


def format_report(r: dict[str, Any]) -> str:
    """The report as one screen of text."""
    lines = [
        f"see-persistence chaos run: {'PASS' if r['passed'] else 'FAIL'}",
        f"  command      {r['command']}",
        f"  run dir      {r['run_dir']}  (seed {r['seed']})",
        f"  duration     {r['duration_s']} s in all, {r['recording_s']} s recording, {r['clients']} clients",
        f"  operations   {r['operations']:,} asked ({r['ops_per_s']:,} ops/s),"
        f" {r['status_updates']:,} of them status updates",
        f"  clients      resent {r['resent']:,} operations, {r['reconnects']} reconnects,"
        f" {r['registered_again']} registered again as a new instance, dropped"
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
    lines += _measured_lines(r)
    shown = (r["problems"] + r["discrepancies"])[:SHOWN_DISCREPANCIES]
    if shown:
        lines.append(f"  first discrepancies ({len(r['problems']) + r['discrepancy_count']} in all):")
        lines += [f"    - {text[:200]}" for text in shown]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _load_manifests(run_dir: Path, clients: int | list[str]) -> list[dict[str, Any]]:
    """The manifests the clients wrote (a missing one is reported by build_report).

    `clients`: their labels, or a count n for the labels c0 ... c(n-1) of a run without a soak.
    """
    labels = [f"c{i}" for i in range(clients)] if isinstance(clients, int) else clients
    manifests = []
    for label in labels:
        path = run_dir / f"client-{label}.manifest.json"
        try:
            with open(path, encoding="utf-8") as f:
                manifests.append(json.load(f))
        except (FileNotFoundError, ValueError) as exc:
            log.error("no usable manifest %s: %s", path, exc)
    return manifests


def _instance_ids(run_dir: Path, labels: list[str]) -> set[str]:
    """The instance id each client wrote into its ready file."""
    ids = set()
    for label in labels:
        try:
            ids.add((run_dir / f"client-{label}.ready").read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            continue
    return ids


def _page_size(db: Path) -> int | None:
    try:
        with read_only(db) as conn:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])
    except sqlite3.Error:
        return None


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C: every child is killed on the way out."""
    raise Interrupted(signal.Signals(signum).name)


def _warn_about_disk(args: argparse.Namespace, run_dir: Path) -> None:
    """A soak at saturation writes gigabytes a minute: say so before the disk fills."""
    free_mb = shutil.disk_usage(run_dir).free >> 20
    if args.max_db_mb <= 0:
        log.warning(
            "no --max-db-mb: nothing is pruned, and a saturated writer can add several GB a minute"
            " (%d MB free here)",
            free_mb,
        )
    elif args.max_db_mb * 1.5 > free_mb:
        log.warning("--max-db-mb %d is more than two thirds of the %d MB free here", args.max_db_mb, free_mb)


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
    if args.soak:
        _warn_about_disk(args, run_dir)
    signal.signal(signal.SIGTERM, _on_terminate)
    started = time.monotonic()
    supervisor = Supervisor(args, run_dir, db)
    log.info("run directory %s, database %s, seed %d", run_dir, db, args.seed)
    try:
        supervisor.start_writers()
        clients = supervisor.start_clients()
        if args.soak:
            supervisor.run_soak()
        else:
            supervisor.run_chaos(clients)
        log.info("recording over; waiting for the clients to flush")
        supervisor.wait_all_clients()
        supervisor.stop_other_program()
        if supervisor.pruner is not None and not supervisor.pruner.close(args.flush_timeout):
            supervisor.chaos.anomaly("the prunes sent were not all confirmed at the end")
        if supervisor.checker is not None and not supervisor.checker.finish(CHECK_TIMEOUT_S):
            raise RuntimeError(f"checking the last clients took more than {CHECK_TIMEOUT_S} s")
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
        supervisor.sampler.stop()
        if supervisor.pruner is not None and supervisor.pruner.client is not None:
            supervisor.pruner.client.close(timeout=0.5)  # closed already after a normal end
        supervisor.processes.end_all()
        supervisor.reader.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    other_writes = other_writer.read_log(run_dir / OTHER_LOG) if supervisor.other is not None else None
    deleted: dict[str, int] = {}
    reports = 0
    if supervisor.checker is not None:
        manifests = supervisor.checker.summaries
        verification = supervisor.checker.total
        pruner = supervisor.pruner
        log.info("checking the rest of %s", db)
        deleted, reports = verify_rest(
            db,
            _instance_ids(run_dir, supervisor.labels)
            | {i for m in manifests for i in m.get("instance_ids", [])},
            other_writes,
            pruner.instance_id if pruner is not None else None,
            pruner.ids if pruner is not None else [],
            verification,
        )
    else:
        manifests = _load_manifests(run_dir, supervisor.labels)
        log.info("verifying %s against %d manifests", db, len(manifests))
        verification = verify(db, manifests, other_writes)
    report = build_report(
        args,
        run_dir,
        db,
        time.monotonic() - started,
        manifests,
        supervisor.chaos,
        writer_exits,
        verification,
        clients_started=len(supervisor.labels),
        measured=supervisor.measured(other_writes, deleted, reports, _page_size(db)),
    )
    _write_json_atomically(run_dir / "report.json", report)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of the tool (the supervisor's options and the client role's)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes at a time (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="how long the clients record (default 30; soak 3600)"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="the same in minutes (e.g. --soak --minutes 60)"
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=None,
        help=f"mean seconds between faults (default 2; soak {SOAK_KILL_EVERY_S:g})",
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="saturation for --minutes: clients replaced as they finish and checked as they exit, the"
        " other program on, checked records pruned past --max-db-mb",
    )
    parser.add_argument(
        "--client-seconds",
        type=float,
        default=SOAK_CLIENT_SECONDS,
        help=f"soak: each client records about this long, x 0.5-1.5 (default {SOAK_CLIENT_SECONDS:g})",
    )
    parser.add_argument(
        "--other-interval",
        type=float,
        default=None,
        help="another program inserts a workflow through plain sqlite3 every this many seconds"
        f" (default off; soak {other_writer.DEFAULT_INTERVAL_S:g}; 0 = off)",
    )
    parser.add_argument(
        "--max-db-mb",
        type=int,
        default=SOAK_MAX_DB_MB,
        help=f"soak: past this size, records already checked are pruned (default {SOAK_MAX_DB_MB};"
        " 0 = never)",
    )
    parser.add_argument(
        "--keep-manifests",
        action="store_true",
        help="soak: keep every manifest, not only those with a discrepancy",
    )
    parser.add_argument(
        "--sample-every", type=float, default=SAMPLE_EVERY_S, help="seconds between looks at the WAL and RSS"
    )
    parser.add_argument(
        "--series-every",
        type=float,
        default=None,
        help=f"the report's time series: seconds per row (default: the whole run; soak {SERIES_EVERY_S:g})",
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
    parser.add_argument("--lifetime", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on --soak."""
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    elif args.seconds is None:
        args.seconds = SOAK_MINUTES * 60 if args.soak else 30.0
    if args.kill_every is None:
        args.kill_every = SOAK_KILL_EVERY_S if args.soak else 2.0
    if args.other_interval is None:
        args.other_interval = other_writer.DEFAULT_INTERVAL_S if args.soak else 0.0
    if args.series_every is None:
        args.series_every = SERIES_EVERY_S if args.soak else args.seconds
    if not args.soak:
        args.max_db_mb = 0  # pruning needs the records checked as the run goes: a soak's


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
    _resolve_defaults(args)
    if args.clients < 1 or args.seconds <= 0 or args.kill_every <= 0 or not 0 <= args.stop_fraction <= 1:
        parser.error("--clients >= 1, --seconds > 0, --kill-every > 0 and 0 <= --stop-fraction <= 1")
    if (
        args.other_interval < 0
        or args.sample_every <= 0
        or args.series_every <= 0
        or args.client_seconds <= 0
    ):
        parser.error("--other-interval >= 0; --sample-every, --series-every and --client-seconds > 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return run_supervisor(args)


if __name__ == "__main__":
    raise SystemExit(main())
