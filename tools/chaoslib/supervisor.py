"""The supervisor: starts the writers, a standby and the clients, keeps the load going, faults the writer.

A plain run has N clients record for --seconds while a fault lands every ~--kill-every s. A soak
replaces each client as soon as it stops recording, hands each exited one to the Checker, and
has the Pruner delete what was checked once the file passes its cap. After every takeover a new
standby is started, as a supervisor such as systemd would.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import other_writer

from see_persistence import Reader
from see_persistence.protocol.models import WriterStatus

from .checker import Checker
from .faults import Chaos, Faults
from .figures import commit_figures, other_program_figures, rss_figures, series, wal_figures
from .observe import wait_until, writer_status
from .processes import Child, Processes
from .pruning import Pruner
from .rundir import GO, ready_path, recorded_path, write_json_atomically
from .sampling import Sampler

log = logging.getLogger("see_persistence.chaos")

START_TIMEOUT_S = 30.0  # a writer or client process to be up and ready
WRITER_STOP_TIMEOUT_S = 30.0  # SIGTERM to exit 0
CLIENT_EXIT_GRACE_S = 120.0  # on top of the clients' flush timeout: close, write the manifest
COUNTERS = ("writer.epoch", "writer.duplicates_total")  # what the writer publishes, if it does
STANDBY_TRIES = 3  # a standby that fails to start is replaced this many times before a fault is skipped
MIN_CLIENT_SECONDS_LEFT = 2.0  # no replacement client starts this close to the end
PRUNE_MARGIN_S = 2.0  # slack between a client process's start and the created_at of its first record
OTHER_EXIT_TIMEOUT_S = other_writer.DEFAULT_BUSY_TIMEOUT_S + 15  # its last write may wait that long


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
        self.faults = Faults(db, self.reader, self.processes, self.chaos, self.elapsed, self._meanwhile)
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
            standby.kill()
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
            return all(ready_path(self.run_dir, label).exists() for label in labels)

        if not wait_until(all_ready, START_TIMEOUT_S):
            raise RuntimeError(f"the clients were not ready within {START_TIMEOUT_S} s")
        self.go_at = time.monotonic()
        go = {"seconds": self.args.seconds, "end_mono": self.go_at + self.args.seconds}
        write_json_atomically(self.run_dir / GO, go)
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
            if child.running() and not recorded_path(self.run_dir, label).exists():
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

    def _meanwhile(self) -> None:
        """Soak: while a stop holds the loop for seconds, clients are still replaced and checked
        records pruned (else the first prune of a short soak could wait past its end). Not
        after the recording's end: what is left is collected and checked as after any run."""
        end = self.go_at + self.args.seconds
        if not self.args.soak or time.monotonic() >= end:
            return
        self.tend_clients(end)
        if self.pruner is not None:
            self.pruner.tick(self.safe_cutoff_wall(), self.elapsed(), self.go_at)

    def run_soak(self) -> None:
        """Until the run's end: replace clients, prune what was checked, and fault now and then."""
        end = self.go_at + self.args.seconds
        next_fault = self.go_at + self._interval()
        while True:
            now = time.monotonic()
            if now >= end:
                break
            self._meanwhile()
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
            self.other.kill()

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
        action = self.faults.stop(status, victim) if stop else self.faults.kill(status, victim)
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
                child.kill()
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

