"""`see-persistence prune`: delete finished workflows older than an age, through the writer."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from ..protocol import operations, timestamps
from ..protocol.errors import CallerError
from ..protocol.status import FINISHED_STATUSES
from .base import Command, CommandError, UsageError
from .common import is_server, open_database
from .durations import duration_argument

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

log = logging.getLogger("see_persistence.cli.prune")

DEFAULT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.05
# The writer confirmed the prune and goes on deleting, but had not finished by --timeout.
EXIT_STILL_RUNNING = 5


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the prune command's arguments."""
    parser.add_argument(
        "--older-than",
        required=True,
        type=duration_argument,
        metavar="AGE",
        help="delete workflows created more than AGE ago: 30d, 12h, 90m, 3600s, 2w",
    )
    parser.add_argument(
        "--status",
        default=",".join(s.value for s in FINISHED_STATUSES),
        metavar="S,S",
        help="comma-separated statuses to delete (default: completed,failed,cancelled);"
        " pending and running workflows are never pruned",
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"wait at most S seconds in all for the writer to confirm the prune and finish it"
        f" (default {DEFAULT_TIMEOUT_S:g}); past it the writer goes on and the command exits"
        f" {EXIT_STILL_RUNNING}",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")


def _statuses(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return operations.check_prunable_statuses("--status", items)
    except CallerError as exc:
        raise UsageError(str(exc)) from None


def count_doomed(reader: Reader, cutoff: str, statuses: list[str]) -> dict[str, int]:
    """What a prune with this cutoff would delete now: the same rows the writer's statements select."""
    placeholders = ", ".join("?" * len(statuses))
    doomed = f"SELECT id FROM workflow_executions WHERE created_at < ? AND status IN ({placeholders})"
    params = (cutoff, *statuses)

    def count(sql: str) -> int:
        return int(reader.query(sql, params)[0][0])

    return {
        "workflow_executions": count(f"SELECT COUNT(*) FROM ({doomed}) AS doomed"),
        "task_executions": count(f"SELECT COUNT(*) FROM task_executions WHERE workflow_id IN ({doomed})"),
        "audit_events": count(f"SELECT COUNT(*) FROM audit_events WHERE workflow_id IN ({doomed})"),
    }


def _describe(counts: dict[str, Any], cutoff: str, statuses: list[str], verb: str) -> str:
    return (
        f"{verb} {counts['workflow_executions']} workflows created before {cutoff} ({', '.join(statuses)}),"
        f" with {counts['task_executions']} tasks and {counts['audit_events']} audit events"
    )


def _send_prune(args: argparse.Namespace, reader: Reader, older_than: timedelta, statuses: list[str]) -> str:
    """Send the prune through a Client and wait for the writer to confirm it; the report event's id."""
    from ..client import Client  # the sockets are needed only here

    writer = reader.get_writer_status()
    if writer is None or not writer.alive:
        # Nothing is sent: a prune queued for a writer that starts later would surprise the user.
        raise CommandError(f"no writer is running on {args.db}; start one with 'see-persistence writer'")
    client = Client(args.db.url if is_server(args.db) else args.db)
    confirmed = False
    try:
        try:
            report_id = client.prune(older_than, statuses)
        except CallerError as exc:
            raise UsageError(str(exc)) from None
        confirmed = client.flush(timeout=args.timeout)
    finally:
        with _quiet_client_unless_debugging(confirmed):
            client.close(timeout=CLOSE_TIMEOUT_S if confirmed else 0.1)  # nobody to wait for
    if not confirmed:
        raise CommandError(
            f"no writer is running on {args.db}: none confirmed the prune within {args.timeout:g} s"
            " (a writer that receives it later may still apply it)"
        )
    return report_id


def _job(reader: Reader, job_id: str) -> dict[str, Any] | None:
    """The prune job's row as the writer last committed it (None: no such job, or no such table)."""
    try:
        rows = reader.query(
            "SELECT workflow_executions, task_executions, audit_events, chunks, older_than, statuses, state,"
            " error FROM prune_jobs WHERE id = ?",
            (job_id,),
        )
    except sqlite3.OperationalError:
        return None  # a file without prune_jobs: its writer reports a prune in the batch itself
    if not rows:
        return None
    workflows, tasks, events, chunks, older_than, statuses, state, error = rows[0]
    return {
        "workflow_executions": workflows,
        "task_executions": tasks,
        "audit_events": events,
        "chunks": chunks,
        "older_than": older_than,
        "statuses": json.loads(statuses),
        "state": state,
        "error": error,
    }


def _wait_for_report(reader: Reader, report_id: str, deadline: float) -> dict[str, Any]:
    """The prune's report (its audit event's data) once the writer finished the job.

    The writer deletes in chunks after it confirmed the prune; it writes the report when it
    is done. Raises _StillRunning with the job's progress if the deadline passes first.
    """
    while True:
        event = reader.get_audit_event(report_id)
        if event is not None:
            return event.data if isinstance(event.data, dict) else {}  # our writer's report is an object
        job = _job(reader, report_id)
        if job is None:
            raise CommandError(
                f"the writer confirmed the prune but recorded neither its job nor its report event"
                f" {report_id} (a dead letter? see 'see-persistence status')"
            )
        if job["state"] == "failed":
            raise CommandError(
                f"the writer gave the prune up after deleting {job['workflow_executions']} workflows,"
                f" {job['task_executions']} tasks and {job['audit_events']} audit events: {job['error']}"
            )
        if time.monotonic() >= deadline:
            raise _StillRunning(job)
        time.sleep(POLL_INTERVAL_S)


class _StillRunning(Exception):
    """The deadline passed while the writer still works on the prune job."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__("prune still under way")
        self.job = job


@contextmanager
def _quiet_client_unless_debugging(confirmed: bool) -> Iterator[None]:
    """Keep the Client's "closed with N operations not confirmed" warning out of our one-line error."""
    client_log = logging.getLogger("see_persistence.client")
    previous = client_log.level
    if not confirmed and not log.isEnabledFor(logging.DEBUG):
        client_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        client_log.setLevel(previous)


def run(args: argparse.Namespace) -> int:
    """Count (--dry-run) or delete old finished workflows, and print the counts."""
    statuses = _statuses(args.status)
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    older_than: timedelta = args.older_than
    reader = open_database(args.db)
    if args.dry_run:
        # The cutoff as Client.prune computes it, so the count matches what a prune would delete.
        cutoff_us = max(0, time.time_ns() // 1000 - int(older_than.total_seconds() * 1_000_000))
        cutoff = timestamps.format_us(cutoff_us)
        counts: dict[str, Any] = count_doomed(reader, cutoff, statuses)
        result = {**counts, "older_than": cutoff, "statuses": statuses, "dry_run": True}
        message = _describe(counts, cutoff, statuses, "would delete")
    else:
        deadline = time.monotonic() + args.timeout
        report_id = _send_prune(args, reader, older_than, statuses)
        try:
            report = _wait_for_report(reader, report_id, deadline)
        except _StillRunning as running:
            reader.close()
            _still_running(args, running.job, report_id, statuses)
        result = {**report, "dry_run": False, "report_event": report_id, "finished": True}
        message = _describe(report, str(report.get("older_than")), statuses, "deleted")
    reader.close()
    print(json.dumps(result) if args.json else message)
    return 0


def _still_running(
    args: argparse.Namespace, job: dict[str, Any], report_id: str, statuses: list[str]
) -> NoReturn:
    """Say how far the writer got, and that it goes on; exit EXIT_STILL_RUNNING."""
    counts = {key: job[key] for key in ("workflow_executions", "task_executions", "audit_events")}
    if args.json:
        progress = {
            **counts,
            "older_than": job["older_than"],
            "statuses": job["statuses"],
            "dry_run": False,
            "report_event": report_id,
            "finished": False,
            "chunks": job["chunks"],
        }
        print(json.dumps(progress))
    so_far = _describe(counts, str(job["older_than"]), statuses, "deleted")
    raise CommandError(
        f"the prune is still under way after {args.timeout:g} s: {so_far} so far; the writer goes on"
        f" with it (and a writer that takes over finishes it); its report will be audit event {report_id}",
        EXIT_STILL_RUNNING,
    )


COMMAND = Command(
    name="prune",
    description="Ask the running writer to delete workflows created before a cutoff whose status is "
    "one of --status, with their tasks and audit events, in order with everything clients sent before; "
    "wait for it to finish and print what it deleted. The writer deletes in short chunks between "
    "clients' batches, and a writer that takes over goes on where it stopped: when --timeout passes "
    f"first, the command says how far it got and exits {EXIT_STILL_RUNNING} while the writer goes on. "
    "--dry-run only counts. Pending and running workflows are never pruned.",
    examples=(
        "see-persistence prune --older-than 30d --dry-run",
        "see-persistence prune --older-than 90d --status completed,cancelled --timeout 60",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
