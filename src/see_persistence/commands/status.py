"""`see-persistence status`: the writer, its throughput, dead letters, WAL, instances, schema, rows."""

from __future__ import annotations

import argparse
import json
import logging
import math
import selectors
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import backends, leases
from ..protocol import schema
from .base import Command, UsageError
from .common import (
    Database,
    file_size,
    human_bytes,
    human_duration,
    open_database,
    schema_version,
    sidecar,
    table_names,
)
from .signals import stop_on_signals

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

COUNTER_PREFIX = "writer."
STALE_COUNTERS_S = 5.0  # the writer publishes about once a second; older than this, it stopped
DEFAULT_INSTANCE_LIMIT = 10
DEFAULT_INTERVAL_S = 2.0  # --watch: redrawn at least this often, so ages shown stay current
MIN_REDRAW_S = 0.25  # --watch: a burst of commits redraws at most this often
# --watch: how long the first draw waits for the watcher to say it has started.
STARTED_WAIT_S = 2.0
# --watch: items the watcher may hold; each only says "draw again", and past this many it
# replaces them with one resync, which says the same.
WATCH_PENDING = 64
CURSOR_HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"

log = logging.getLogger("see_persistence.cli.status")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the status command's arguments."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (with --watch: one a line)"
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="show the report again whenever something is committed, until interrupted",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help=f"with --watch: show it at least every S seconds (default {DEFAULT_INTERVAL_S:g}),"
        " so the heartbeat and liveness ages stay current",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=DEFAULT_INSTANCE_LIMIT,
        metavar="N",
        help=f"list at most N ended or dead instances, newest first (default {DEFAULT_INSTANCE_LIMIT}); "
        "live ones are always listed",
    )


def _writer(reader: Reader, now: datetime) -> dict[str, Any] | None:
    status = reader.get_writer_status()
    if status is None:
        return None
    report = status.model_dump(mode="json")
    report["state"] = "alive" if status.alive else ("released" if status.released else "dead")
    report["uptime_s"] = round((now - status.since).total_seconds(), 3) if status.alive else None
    age_s = status.heartbeat_age_s  # on CLOCK_BOOTTIME where it can: a wall-clock step is no silence
    if age_s is None:
        age_s = (now - status.heartbeat).total_seconds()
    report["heartbeat_age_s"] = round(age_s, 3)
    return report


def _metrics(counters: dict[str, int], writer: dict[str, Any] | None, now_us: int) -> dict[str, Any] | None:
    """The writer's published `writer.*` counters, and whether they are its current ones."""
    published = {k[len(COUNTER_PREFIX) :]: v for k, v in counters.items() if k.startswith(COUNTER_PREFIX)}
    if not published:
        return None
    age_s = (now_us - published.get("published_at_us", 0)) / 1e6
    current = (
        writer is not None
        and writer["state"] == "alive"
        and published.get("pid") == writer["pid"]
        and published.get("epoch") == writer["epoch"]
        and age_s <= STALE_COUNTERS_S
    )
    return {
        "pid": published.get("pid"),
        "epoch": published.get("epoch"),
        "published_age_s": round(age_s, 3),
        "current": current,
        "operations_per_s": published.get("operations_per_s", 0),
        "batch_operations_mean": published.get("batch_operations_mean", 0),
        "commit_us_mean": published.get("commit_us_mean", 0),
        "commit_us_max": published.get("commit_us_max", 0),
        "commit_us_longest": published.get("commit_us_longest", 0),
        "hold_us_longest": published.get("hold_us_longest", 0),
        "totals": {k[: -len("_total")]: v for k, v in sorted(published.items()) if k.endswith("_total")},
    }


def _instances(reader: Reader, tables: set[str], limit: int) -> dict[str, Any]:
    """Live instances (pid checked) and the most recent ended or dead ones, with workflow counts."""
    if "instances" not in tables:
        return {"live": [], "others": [], "others_total": 0}
    per_instance = dict(
        reader.query(
            "SELECT instance_id, COUNT(*) FROM workflow_executions WHERE instance_id IS NOT NULL"
            " GROUP BY instance_id"
        )
    )
    live, others = [], []
    for instance in reader.get_instances():
        entry = instance.model_dump(mode="json")
        entry["workflows"] = per_instance.get(instance.id, 0)
        # Another host's instance cannot be checked from here: live while the writer hears it.
        running = instance.state == "live" and (
            not leases.is_local(instance.host_id)
            or leases.is_alive(instance.pid, instance.process_create_time, instance.host, instance.boot_id)
        )
        if running:
            live.append(entry)
        else:
            # registered live but its process is gone: dead, until the writer's sweep says so
            entry["state"] = "dead" if instance.state == "live" else instance.state
            others.append(entry)
    return {"live": live, "others": others[: max(limit, 0)], "others_total": len(others)}


def _clock_skews(live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hosts whose clock is leases.CLOCK_SKEW_SHOWN_S or more off the writer's, by their live instances.

    A host's skew is the one the writer measured last (the live instance it heard from last).
    """
    latest: dict[str, dict[str, Any]] = {}
    for entry in live:
        if entry.get("clock_skew_us") is None or entry.get("host_id") is None:
            continue
        known = latest.get(entry["host_id"])
        if known is None or (entry["last_heard_at"] or "") > (known["last_heard_at"] or ""):
            latest[entry["host_id"]] = entry
    return [
        {
            "host": entry["host"],
            "host_id": host_id,
            # The host's clock minus the writer's: negative when it is behind.
            "clock_offset_s": round(-entry["clock_skew_us"] / 1e6, 3),
            "instance_id": entry["id"],
            "measured_at": entry["last_heard_at"],
        }
        for host_id, entry in sorted(latest.items())
        if abs(entry["clock_skew_us"]) >= leases.CLOCK_SKEW_SHOWN_S * 1e6
    ]


def gather(reader: Reader, db: Database, instance_limit: int) -> dict[str, Any]:
    """Everything status reports, as one JSON-ready dict (a server has no file: its sizes are None)."""
    now = datetime.now(timezone.utc)
    tables = table_names(reader)
    counters = reader.get_counters()
    writer = _writer(reader, now)
    rows = reader.count_rows()
    instances = _instances(reader, tables, instance_limit)
    version = schema_version(reader, tables)
    return {
        "database": str(db),
        "file_bytes": None if isinstance(db, backends.DatabaseURL) else file_size(db),
        "wal_bytes": None if isinstance(db, backends.DatabaseURL) else file_size(sidecar(db, "-wal")) or 0,
        "schema": {"version": version, "code_version": schema.SCHEMA_VERSION},
        "writer": writer,
        "writer_metrics": _metrics(counters, writer, time.time_ns() // 1000),
        "dead_letters": {
            "count": rows.get("dead_letters", 0),
            "dropped": counters.get("dead_letters_dropped", 0),
        },
        "live_instances": instances["live"],
        "other_instances": instances["others"],
        "other_instances_total": instances["others_total"],
        "clock_skews": _clock_skews(instances["live"]),
        "rows": rows,
    }


def _schema_line(version: int | None, code: int) -> str:
    if version is None:
        return "no schema_version recorded"
    if version == code:
        return f"version {version} (this code knows {code})"
    relation = "newer than" if version > code else "older than"
    return f"version {version}, {relation} this code's {code}"


def _writer_lines(writer: dict[str, Any] | None) -> list[str]:
    if writer is None:
        return ["writer    none has ever run on this file"]
    line = f"writer    pid {writer['pid']} on {writer['host']}, {writer['state']}, epoch {writer['epoch']}"
    line += f", since {writer['since']}"
    if writer["uptime_s"] is not None:
        line += f", up {human_duration(writer['uptime_s'])}"
    lines = [line, f"          endpoint {writer['endpoint']}"]
    if writer["state"] == "alive":
        lines.append(f"          heartbeat {human_duration(max(writer['heartbeat_age_s'], 0.0))} ago")
    return lines


def _metrics_lines(metrics: dict[str, Any] | None) -> list[str]:
    if metrics is None:
        return ["metrics   no counters published"]
    source = "" if metrics["current"] else f" (stale: from pid {metrics['pid']}, epoch {metrics['epoch']})"
    mean_ms, max_ms = metrics["commit_us_mean"] / 1000, metrics["commit_us_max"] / 1000
    age = human_duration(max(metrics["published_age_s"], 0.0))
    lines = [
        f"metrics   {metrics['operations_per_s']} operations/s, {metrics['batch_operations_mean']} per batch,"
        f" commit {mean_ms:.2f} ms mean, {max_ms:.2f} ms max (published {age} ago){source}"
        f"; longest commit {metrics['commit_us_longest'] / 1000:.1f} ms,"
        f" lock held at most {metrics['hold_us_longest'] / 1000:.1f} ms"
    ]
    if metrics["totals"]:
        totals = ", ".join(f"{name} {value}" for name, value in metrics["totals"].items())
        lines.append(f"          totals {totals}")
    return lines


def _instance_line(entry: dict[str, Any]) -> str:
    when = entry["ended_at"] or entry["last_seen"] or entry["started_at"] or "-"
    line = (
        f"          {entry['state']:<6} {entry['id']}  pid {entry['pid']}  {entry['workflows']} workflows"
        f"  last seq {entry['last_seq']}  {'ended' if entry['state'] != 'live' else 'seen'} {when}"
    )
    if not leases.is_local(entry.get("host_id")):
        # Its pid means nothing here: where it runs, and when the writer last heard from it.
        line += f"  on {entry['host']} ({entry['host_id']}), heard {entry.get('last_heard_at') or '-'}"
    return line


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text, one topic a line (continuations indented)."""
    if report["file_bytes"] is None and report["wal_bytes"] is None:
        where = f"database  {report['database']} (PostgreSQL)"
    else:
        where = (
            f"database  {report['database']} ({human_bytes(report['file_bytes'])},"
            f" WAL {human_bytes(report['wal_bytes'])})"
        )
    lines = [
        where,
        f"schema    {_schema_line(report['schema']['version'], report['schema']['code_version'])}",
        *_writer_lines(report["writer"]),
        *_metrics_lines(report["writer_metrics"]),
    ]
    dead = report["dead_letters"]
    lines.append(f"dead      {dead['count']} dead letters, {dead['dropped']} dropped by the cap")
    live, others = report["live_instances"], report["other_instances"]
    lines.append(f"instances {len(live)} live, {report['other_instances_total']} ended or dead")
    lines.extend(_instance_line(entry) for entry in live + others)
    hidden = report["other_instances_total"] - len(others)
    if hidden > 0:
        lines.append(f"          ... and {hidden} older ended or dead instances (--instances N shows more)")
    for skew in report["clock_skews"]:
        offset = skew["clock_offset_s"]
        lines.append(
            f"clock     {skew['host']} ({skew['host_id']}) runs {abs(offset):.3f} s"
            f" {'behind' if offset < 0 else 'ahead of'} the writer's clock: its record times are its own"
            f" (measured from instance {skew['instance_id']}, {skew['measured_at']})"
        )
    lines.append("rows      " + ", ".join(f"{name} {count}" for name, count in report["rows"].items()))
    return lines


def print_report(report: dict[str, Any]) -> None:
    """The report as text, one topic a line."""
    print("\n".join(report_lines(report)))


def run(args: argparse.Namespace) -> int:
    """Print the status report (with --watch: again whenever something in it was committed)."""
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise UsageError("--interval must be a number of seconds more than 0")
    reader = open_database(args.db)
    if args.watch:
        _watch(reader, args)
        reader.close()
        return 0
    report = gather(reader, args.db, args.instances)
    reader.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


class _Screen:
    """Where --watch draws: in place at a terminal, else one block after another."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.in_place = not as_json and sys.stdout.isatty()
        self.drawn = 0

    def draw(self, report: dict[str, Any]) -> None:
        """Show `report`: a JSON line, a block after a blank line, or the terminal redrawn."""
        if self.as_json:
            text = json.dumps(report) + "\n"
        elif self.in_place:
            # Home, each line then clear its rest, then clear below: no blank flash between draws.
            first = CLEAR_SCREEN if self.drawn == 0 else ""
            body = "".join(f"{line}{CLEAR_LINE}\n" for line in report_lines(report))
            text = f"{first}{CURSOR_HOME}{body}{CLEAR_BELOW}"
        else:
            text = ("\n" if self.drawn else "") + "\n".join(report_lines(report)) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()  # a pipe reader sees each block as it is drawn
        self.drawn += 1


def _watch(reader: Reader, args: argparse.Namespace) -> None:
    """Draw the report, then again after each commit the change feed announces, until a signal.

    A burst of commits is one redraw at most every MIN_REDRAW_S; with nothing committed it is
    redrawn every --interval anyway, so the heartbeat and liveness ages stay true. The first
    draw waits for the watcher's Resync(STARTED) (bounded): drawn before it, a commit in
    between could go unshown until the next interval.
    """
    screen = _Screen(args.json)
    with (
        stop_on_signals() as stop,
        reader.watch(max_pending=WATCH_PENDING) as watcher,
        selectors.DefaultSelector() as selector,
    ):
        selector.register(watcher.fileno(), selectors.EVENT_READ)
        selector.register(stop.fileno(), selectors.EVENT_READ)
        drawn_at: float | None = None
        due = time.monotonic() + STARTED_WAIT_S
        while not stop.is_set():
            now = time.monotonic()
            if now >= due:
                screen.draw(gather(reader, args.db, args.instances))
                drawn_at = time.monotonic()
                due = drawn_at + args.interval
                continue
            selector.select(due - now)
            if stop.is_set():
                break
            if watcher.poll():  # a change or a resync: either way, something shown may be stale
                soonest = time.monotonic() if drawn_at is None else drawn_at + MIN_REDRAW_S
                due = min(due, soonest)
    log.debug("status --watch stopped by a signal")


COMMAND = Command(
    name="status",
    description="Show the writer lease (pid, alive, endpoint, epoch, since, uptime), the writer's "
    "published counters (throughput, batch size, commit latency), dead letters, the WAL size, live "
    "and ended or dead GUI instances with their workflow counts, the clock of any host whose GUIs"
    f" run {leases.CLOCK_SKEW_SHOWN_S:g} s or more off the writer's, the schema version and row counts. "
    "With --watch it shows the report again whenever a change is committed (at most "
    f"{1 / MIN_REDRAW_S:g} times a second) and at least every --interval seconds, until SIGINT or "
    "SIGTERM (exit code 0): redrawn in place at a terminal; otherwise each report follows the last "
    "after a blank line, or with --json one JSON object a line.",
    examples=(
        "see-persistence status",
        "see-persistence status --db ~/.s_e_e/workflows.db --json",
        "see-persistence status --watch",
        "see-persistence status --watch --json --interval 10 > status.jsonl",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
