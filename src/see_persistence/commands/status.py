"""`see-persistence status`: the writer, its throughput, dead letters, WAL, instances, schema, rows."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import leases
from ..protocol import schema
from .base import Command
from .common import (
    file_size,
    human_bytes,
    human_duration,
    open_database,
    schema_version,
    sidecar,
    table_names,
)

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

COUNTER_PREFIX = "writer."
STALE_COUNTERS_S = 5.0  # the writer publishes about once a second; older than this, it stopped
DEFAULT_INSTANCE_LIMIT = 10


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the status command's arguments."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
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
        running = instance.state == "live" and leases.is_alive(
            instance.pid, instance.process_create_time, instance.host, instance.boot_id
        )
        if running:
            live.append(entry)
        else:
            # registered live but its process is gone: dead, until the writer's sweep says so
            entry["state"] = "dead" if instance.state == "live" else instance.state
            others.append(entry)
    return {"live": live, "others": others[: max(limit, 0)], "others_total": len(others)}


def gather(reader: Reader, db: Path, instance_limit: int) -> dict[str, Any]:
    """Everything status reports, as one JSON-ready dict."""
    now = datetime.now(timezone.utc)
    tables = table_names(reader)
    counters = reader.get_counters()
    writer = _writer(reader, now)
    rows = reader.count_rows()
    instances = _instances(reader, tables, instance_limit)
    version = schema_version(reader, tables)
    return {
        "database": str(db),
        "file_bytes": file_size(db),
        "wal_bytes": file_size(sidecar(db, "-wal")) or 0,
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
        "rows": rows,
    }


def _schema_line(version: int | None, code: int) -> str:
    if version is None:
        return "no schema_version recorded"
    if version == code:
        return f"version {version} (this code knows {code})"
    relation = "newer than" if version > code else "older than"
    return f"version {version}, {relation} this code's {code}"


def _print_writer(writer: dict[str, Any] | None) -> None:
    if writer is None:
        print("writer    none has ever run on this file")
        return
    line = f"writer    pid {writer['pid']} on {writer['host']}, {writer['state']}, epoch {writer['epoch']}"
    line += f", since {writer['since']}"
    if writer["uptime_s"] is not None:
        line += f", up {human_duration(writer['uptime_s'])}"
    print(line)
    print(f"          endpoint {writer['endpoint']}")
    if writer["state"] == "alive":
        print(f"          heartbeat {human_duration(max(writer['heartbeat_age_s'], 0.0))} ago")


def _print_metrics(metrics: dict[str, Any] | None) -> None:
    if metrics is None:
        print("metrics   no counters published")
        return
    source = "" if metrics["current"] else f" (stale: from pid {metrics['pid']}, epoch {metrics['epoch']})"
    mean_ms, max_ms = metrics["commit_us_mean"] / 1000, metrics["commit_us_max"] / 1000
    age = human_duration(max(metrics["published_age_s"], 0.0))
    print(
        f"metrics   {metrics['operations_per_s']} operations/s, {metrics['batch_operations_mean']} per batch,"
        f" commit {mean_ms:.2f} ms mean, {max_ms:.2f} ms max (published {age} ago){source}"
        f"; longest commit {metrics['commit_us_longest'] / 1000:.1f} ms,"
        f" lock held at most {metrics['hold_us_longest'] / 1000:.1f} ms"
    )
    if metrics["totals"]:
        print("          totals " + ", ".join(f"{name} {value}" for name, value in metrics["totals"].items()))


def _print_instance(entry: dict[str, Any]) -> None:
    when = entry["ended_at"] or entry["last_seen"] or entry["started_at"] or "-"
    print(
        f"          {entry['state']:<6} {entry['id']}  pid {entry['pid']}  {entry['workflows']} workflows"
        f"  last seq {entry['last_seq']}  {'ended' if entry['state'] != 'live' else 'seen'} {when}"
    )


def print_report(report: dict[str, Any]) -> None:
    """The report as text, one topic a line."""
    print(
        f"database  {report['database']} ({human_bytes(report['file_bytes'])},"
        f" WAL {human_bytes(report['wal_bytes'])})"
    )
    print(f"schema    {_schema_line(report['schema']['version'], report['schema']['code_version'])}")
    _print_writer(report["writer"])
    _print_metrics(report["writer_metrics"])
    dead = report["dead_letters"]
    print(f"dead      {dead['count']} dead letters, {dead['dropped']} dropped by the cap")
    live, others = report["live_instances"], report["other_instances"]
    print(f"instances {len(live)} live, {report['other_instances_total']} ended or dead")
    for entry in live + others:
        _print_instance(entry)
    hidden = report["other_instances_total"] - len(others)
    if hidden > 0:
        print(f"          ... and {hidden} older ended or dead instances (--instances N shows more)")
    print("rows      " + ", ".join(f"{name} {count}" for name, count in report["rows"].items()))


def run(args: argparse.Namespace) -> int:
    """Print the status report."""
    reader = open_database(args.db)
    report = gather(reader, Path(args.db), args.instances)
    reader.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


COMMAND = Command(
    name="status",
    help="show the writer, its throughput, dead letters, WAL size, instances and row counts",
    description="Show the writer lease (pid, alive, endpoint, epoch, since, uptime), the writer's "
    "published counters (throughput, batch size, commit latency), dead letters, the WAL size, live "
    "and ended or dead GUI instances with their workflow counts, the schema version and row counts.",
    examples=("see-persistence status", "see-persistence status --db ~/.s_e_e/workflows.db --json"),
    configure=configure,
    run=run,
)
