"""The markdown report: the write tables, every section in order, the targets, the notes, the plot."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

from . import feed, other_writer_section, reads, tcp_section, write_tables
from .backends import SYSTEM_TITLES
from .ceiling import CEILING_OPS_PER_TRANSACTION
from .figures import latency_of
from .floors import busy_floor_lines
from .formatting import fmt_ns, markdown_table
from .results import Results
from .settings import ROOT
from .targets import (
    TARGET_P,
    Target,
    target_p,
    targets_table,
)
from .workloads import WORKLOAD_TITLES, WORKLOADS


def evaluate_targets(results: Results) -> list[Target]:
    """Every target of the issues, met / not met / not measured, section by section."""
    targets = write_tables.section_targets(results)
    if results.other_writer is not None:
        targets += other_writer_section.section_targets(results.other_writer)
    if results.feed is not None:
        targets += feed.section_targets(results.feed)
    if results.tcp is not None:
        targets += tcp_section.section_targets(results.tcp)
    if results.reads is not None:
        targets += reads.section_targets(results.reads)
    return targets


def versions() -> list[tuple[str, str]]:
    """The versions of Python, SQLite and the dependencies, and this checkout's revision."""
    import msgpack
    import psutil
    import pydantic
    import zmq

    return [
        ("Python", platform.python_version() + f" ({platform.python_implementation()})"),
        ("SQLite", sqlite3.sqlite_version),
        ("pyzmq / libzmq", f"{zmq.__version__} / {zmq.zmq_version()}"),
        ("msgpack", ".".join(str(v) for v in msgpack.version)),
        ("pydantic", pydantic.VERSION),
        ("psutil", psutil.__version__),
        ("see-persistence", _git_revision()),
    ]


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def _machine() -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return [
        ("CPU", f"{model}, {os.cpu_count()} logical CPUs (nproc)"),
        ("RAM", ram),
        ("OS", f"{platform.system()} {platform.release()}"),
    ]


def _command() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe, *sys.argv])


def render(results: Results) -> str:
    """The whole report as markdown."""
    s = results.settings
    out = ["# Benchmarks", ""]
    out += [
        f"Written by `tools/bench.py` on {results.started} in {results.duration_s:.0f} s"
        + (" — **quick mode: tiny cells, indicative only**." if s.quick else "."),
        "Every figure is beside its baseline, measured in the same run on the same machine.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in _machine()]
    lb, la = results.load_before, results.load_after
    out += [
        f"- load average (1/5/15 min): {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f} before,"
        f" {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} after",
    ]
    for section, load in results.other_load.items():
        text = "n/a" if load is None else f"{load[0]:.2f} cores on average, {load[1]:.2f} at most"
        out += [
            f"- CPU used by other processes (not this benchmark's) during the {section}: {text}"
            + (" — **the machine was shared; figures are disturbed**" if load and load[0] > 0.25 else "")
        ]
    out += [""]
    out += ["## Versions", ""]
    out += [f"- {k}: {v}" for k, v in (results.versions or versions())]
    out += ["", "## Command", "", "```sh", _command(), "```", ""]
    paced = f" (a paced phase {s.paced_seconds:g} s)" if s.paced_seconds != s.seconds else ""
    out += [
        "## Method",
        "",
        f"- P = {', '.join(map(str, s.procs))} GUI processes; each cell runs {s.seconds:g} s after"
        f" {s.warmup:g} s of warm-up{paced}, on a fresh database. Rows/s count the operations committed"
        " inside the window (for us: confirmed by the writer's commit notices), summed over the GUI"
        " processes.",
        "- naive: every GUI process has its own connection (WAL, synchronous=NORMAL, busy_timeout 30 s,"
        " foreign_keys=ON) and runs the writer's own statements (`protocol/statements.py`), each operation"
        " its own transaction; once with our time-ordered ids, once with uuid4 ids.",
        "- see-persistence: P GUI processes calling `Client`, one `see-persistence writer` process."
        " A flooding GUI pauses (outside the timed calls) while more than"
        f" {s.flood_cap:,} of its operations wait unconfirmed, so nothing is dropped and the"
        " writer stays saturated.",
        "- ceiling: one process, the same statements, `executemany` in transactions of"
        f" {CEILING_OPS_PER_TRANSACTION} operations (the mix grouped by statement); only SQLite time counts.",
        "- latencies: `time.perf_counter_ns()` around each call in the GUI processes; percentiles"
        " (nearest rank) of all samples of all GUIs together, never averaged.",
        "- writer CPU and RSS: psutil on the writer's pid every 50 ms.",
    ]
    if results.floor is not None:
        f = results.floor
        out += [
            "- the machine's own floor: `json.dumps({'n': i})` timed the same way at 2,000 calls/s, alone:"
            f" p50 {fmt_ns(f.p50)}, p99 {fmt_ns(f.p99)}, p99.9 {fmt_ns(f.p999)}, max {fmt_ns(f.max)}"
            " (a call after a sleep runs on cold caches)."
        ]
    out += busy_floor_lines(results.busy_floors)
    out += [""]
    for workload in WORKLOADS:
        out += write_tables.workload_section(results, workload)
    out += other_writer_section.section_lines(results)
    out += feed.section_lines(results)
    out += tcp_section.section_lines(results)
    out += reads.section_lines(results)
    out += ["## Targets", ""]
    p = target_p(s)
    if p != TARGET_P:
        out += [f"P={TARGET_P} was not run; the targets are judged at P={p}.", ""]
    rows = [
        [
            t.name,
            t.measured,
            t.baseline,
            t.ratio,
            "not measured" if t.met is None else ("met" if t.met else "**not met**"),
        ]
        for t in evaluate_targets(results)
    ]
    out += markdown_table(["target", "measured", "baseline / limit", "ratio", "result"], rows)
    notes = []
    for cell in [*results.ceilings.values(), *results.cells.values()]:
        label = (
            f"{WORKLOAD_TITLES[cell.workload].split(' (')[0]}, {SYSTEM_TITLES[cell.system]}, P={cell.procs}"
        )
        if cell.error:
            notes.append(f"- {label}: **failed**: {cell.error}")
        for note in cell.notes:
            notes.append(f"- {label}: {note}")
        if cell.writer_exit and any(code != 0 for code in cell.writer_exit):
            notes.append(f"- {label}: writer exit codes {cell.writer_exit}")
        if cell.drain_s is not None:
            notes.append(f"- {label}: the backlog after the flood drained in {cell.drain_s:.2f} s")
    if results.other_writer and results.other_writer.error:
        notes.append(f"- another program beside the GUIs: **failed**: {results.other_writer.error}")
    if results.feed and results.feed.error:
        notes.append(f"- live views (change feed): **failed**: {results.feed.error}")
    if results.tcp and results.tcp.error:
        notes.append(f"- TCP with CURVE beside ipc: **failed**: {results.tcp.error}")
    if results.reads and results.reads.error:
        notes.append(f"- reads: **failed**: {results.reads.error}")
    if notes:
        out += ["## Notes", "", *notes, ""]
    for name, text in results.profiles:
        out += [f"## Writer profile: {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


def render_one_section(
    results: Results,
    what: str,
    option: str,
    load_key: str,
    lines: list[str],
    targets: list[Target],
    targets_title: str = "Targets",
) -> str:
    """One section measured alone, with the versions, the competing load and its targets (printed)."""
    load = results.other_load.get(load_key)
    out = [
        f"{what} only: `tools/bench.py {option}` on {results.started} in"
        f" {results.duration_s:.0f} s; CPU used by other processes meanwhile: "
        + ("n/a" if load is None else f"{load[0]:.2f} cores on average, {load[1]:.2f} at most")
        + ".",
        "",
    ]
    out += [f"- {name}: {value}" for name, value in results.versions] + [""]
    return "\n".join(out + lines + targets_table(targets_title, targets))


def render_other_writer_only(results: Results) -> str:
    """The other-writer section and its targets of an `--only other-writer` run (printed, never written)."""
    targets = (
        other_writer_section.section_targets(results.other_writer) if results.other_writer is not None else []
    )
    return render_one_section(
        results,
        "Another program",
        "--only other-writer",
        "other-writer section",
        other_writer_section.section_lines(results),
        targets,
    )


def render_feed_only(results: Results) -> str:
    """The live-views section and its targets of an `--only feed` run (printed, never written)."""
    targets = feed.section_targets(results.feed) if results.feed is not None else []
    return render_one_section(
        results, "Live views", "--only feed", "feed section", feed.section_lines(results), targets
    )


def render_tcp_only(results: Results) -> str:
    """The TCP section and its targets of an `--only tcp` run (printed, never written)."""
    targets = tcp_section.section_targets(results.tcp) if results.tcp is not None else []
    return render_one_section(
        results, "TCP with CURVE", "--only tcp", "tcp section", tcp_section.section_lines(results), targets
    )


def render_reads_only(results: Results) -> str:
    """The reads section and the read targets of a `--reads-only` run (printed, never written)."""
    targets = reads.section_targets(results.reads) if results.reads is not None else []
    return render_one_section(
        results, "Reads", "--reads-only", "reads", reads.section_lines(results), targets, "Read targets"
    )


def render_reads_postgresql_only(results: Results) -> str:
    """The reads on PostgreSQL and their targets, of an `--only reads-postgresql` run (printed)."""
    measured = results.reads_postgresql
    targets = reads.section_targets(measured) if measured is not None else []
    return render_one_section(
        results,
        "Reads on PostgreSQL",
        "--only reads-postgresql",
        "reads on PostgreSQL",
        reads.reads_lines(measured, "Reads on PostgreSQL"),
        targets,
        "Read targets",
    )


def write_plot(results: Results, output: Path) -> Path | None:
    """A latency plot next to the report, where matplotlib is installed (an optional extra)."""
    try:
        import matplotlib  # type: ignore[import-not-found]  # an optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = output.with_name(output.stem + "_latency.png")
    p = target_p(results.settings)
    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(12, 4.5), squeeze=False)
    for ax, workload in zip(axes[0], WORKLOADS, strict=True):
        for system, phase, style in (
            ("naive-same", "paced", "--"),
            ("ours", "paced", "-"),
            ("ours", "flood", ":"),
            ("ours", "absent", "-."),
        ):
            lat = latency_of(results.cells.get((workload, system, p)), phase)
            if lat is None:
                continue
            xs = [-math.log10(1 - f) for f, _ in lat.curve]
            ax.plot(xs, [v / 1000 for _, v in lat.curve], style, label=f"{SYSTEM_TITLES[system]}, {phase}")
        ax.set_yscale("log")
        ax.set_xticks([math.log10(2), 1, 2, 3, 4])
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
        ax.set_ylabel("write call (µs)")
        ax.set_title(f"{WORKLOAD_TITLES[workload].split(' (')[0]}, P={p}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


KEPT_MARKER = "<!-- kept by tools/bench.py: figures measured by other tools -->"


def kept_sections(output: Path) -> str:
    """What follows KEPT_MARKER in the existing file (e.g. takeover times from tools/chaos.py)."""
    try:
        text = output.read_text(encoding="utf-8")
    except OSError:
        return ""
    index = text.find(KEPT_MARKER)
    return "\n" + text[index:] if index >= 0 else ""


POSTGRESQL_SECTION_KEY = "--backend postgresql"


def _kept_markers(key: str) -> tuple[str, str]:
    return (
        f"<!-- written by tools/bench.py {key}: begin -->",
        f"<!-- written by tools/bench.py {key}: end -->",
    )


def write_kept_section(output: Path, key: str, text: str) -> None:
    """Put `text` in the kept part of `output` (after KEPT_MARKER), replacing what `key` wrote last.

    A section run alone (`--backend postgresql`) lives there, so a full run keeps it.
    """
    begin, end = _kept_markers(key)
    try:
        current = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    start, stop = current.find(begin), current.find(end)
    if start >= 0 and stop > start:
        rest = current[stop + len(end) :].lstrip("\n")
        updated = current[:start] + block + ("\n" + rest if rest else "")
    elif KEPT_MARKER in current:
        updated = current.rstrip("\n") + "\n\n" + block
    else:
        updated = (current.rstrip("\n") + "\n\n" if current else "") + KEPT_MARKER + "\n\n" + block
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(updated, encoding="utf-8")
