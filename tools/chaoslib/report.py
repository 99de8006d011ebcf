"""The report: everything a run measured, as one JSON-able dict and as one screen of text.

`build_report` decides whether the run passed; `format_report` prints it. The JSON keys and the
text are what docs/RELIABILITY.md shows and what tests and scripts read: change them with care.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import other_writer

from .faults import Chaos
from .figures import spread
from .verification import Verification

SHOWN_DISCREPANCIES = 8


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
        "takeover_after_kill_s": spread([a.takeover_s for a in kills if a.takeover_s is not None]),
        "takeover_after_presumed_dead_s": spread([a.takeover_s for a in stops if a.takeover_s is not None]),
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


def _ms(seconds: dict[str, float | None]) -> str:
    """min/median/max in milliseconds, or n/a."""
    if seconds["min"] is None:
        return "n/a"
    return " / ".join(f"{1000 * value:.0f}" for value in seconds.values() if value is not None) + " ms"


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

