"""`see-persistence prune`: delete finished workflows older than an age, through the writer."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..protocol import operations, timestamps
from ..protocol.errors import CallerError
from ..protocol.status import FINISHED_STATUSES
from .base import Command, CommandError, UsageError
from .common import open_database
from .durations import duration_argument

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

log = logging.getLogger("see_persistence.cli.prune")

DEFAULT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 2.0


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
        help=f"wait at most S seconds for the writer to commit the prune (default {DEFAULT_TIMEOUT_S:g})",
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
        "workflow_executions": count(f"SELECT COUNT(*) FROM ({doomed})"),
        "task_executions": count(f"SELECT COUNT(*) FROM task_executions WHERE workflow_id IN ({doomed})"),
        "audit_events": count(f"SELECT COUNT(*) FROM audit_events WHERE workflow_id IN ({doomed})"),
    }


def _describe(counts: dict[str, Any], cutoff: str, statuses: list[str], verb: str) -> str:
    return (
        f"{verb} {counts['workflow_executions']} workflows created before {cutoff} ({', '.join(statuses)}),"
        f" with {counts['task_executions']} tasks and {counts['audit_events']} audit events"
    )


def _send_prune(args: argparse.Namespace, reader: Reader, older_than: timedelta, statuses: list[str]) -> str:
    """Send the prune through a Client and wait for the writer; the report event's id."""
    from ..client import Client  # the sockets are needed only here

    writer = reader.get_writer_status()
    if writer is None or not writer.alive:
        # Nothing is sent: a prune queued for a writer that starts later would surprise the user.
        raise CommandError(f"no writer is running on {args.db}; start one with 'see-persistence writer'")
    client = Client(args.db)
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
        report_id = _send_prune(args, reader, older_than, statuses)
        event = reader.get_audit_event(report_id)
        if event is None:
            raise CommandError(f"the writer confirmed the prune but its report event {report_id} is missing")
        report = event.data if isinstance(event.data, dict) else {}  # our writer's report is an object
        result = {**report, "dry_run": False, "report_event": report_id}
        message = _describe(report, str(report.get("older_than")), statuses, "deleted")
    reader.close()
    print(json.dumps(result) if args.json else message)
    return 0


COMMAND = Command(
    name="prune",
    help="delete finished workflows older than an age, with their tasks and audit events",
    description="Ask the running writer to delete workflows created before a cutoff whose status is "
    "one of --status, with their tasks and audit events, in order with everything clients sent before; "
    "print what it deleted. --dry-run only counts. Pending and running workflows are never pruned.",
    examples=(
        "see-persistence prune --older-than 30d --dry-run",
        "see-persistence prune --older-than 90d --status completed,cancelled --timeout 60",
    ),
    configure=configure,
    run=run,
)
