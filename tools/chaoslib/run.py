"""One supervised run, from a fresh database to the printed report.

Start the writers and the clients, fault the writer until the recording is over, let every client
flush and exit, stop the writers, verify the database (a soak has checked most of it already),
write report.json and print the report. Whatever happens, every child process is killed on the
way out.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import other_writer

from .report import build_report, format_report
from .rundir import GO, MANIFEST_GLOB, OTHER_LOG, REPORT, instance_ids, load_manifests, write_json_atomically
from .supervisor import Supervisor
from .verification import read_only, verify, verify_rest

log = logging.getLogger("see_persistence.chaos")

CHECK_TIMEOUT_S = 900.0  # the checker's backlog at the end of a soak


class Interrupted(Exception):
    """The supervisor was asked to stop (SIGINT or SIGTERM)."""


def _page_size(db: Path) -> int | None:
    """The database's page size (a WAL frame holds one page); None if it cannot be read."""
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
    if any(run_dir.glob(MANIFEST_GLOB)) or (run_dir / GO).exists():
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
            supervisor.chaos.anomaly("the prunes sent were not all committed and reported at the end")
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
            instance_ids(run_dir, supervisor.labels)
            | {i for m in manifests for i in m.get("instance_ids", [])},
            other_writes,
            pruner.instance_id if pruner is not None else None,
            pruner.ids if pruner is not None else [],
            verification,
        )
    else:
        manifests = load_manifests(run_dir, supervisor.labels)
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
    write_json_atomically(run_dir / REPORT, report)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1
