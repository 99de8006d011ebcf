"""Benchmark: see-persistence beside the design it replaces and beside SQLite's own ceiling.

    python tools/bench.py [--procs 1,2,4,8] [--seconds N] [--quick] [--output PATH | --no-write]

Measured in one invocation on this machine:

- naive: P GUI processes, each with its own SQLite connection (WAL, synchronous=NORMAL,
  busy_timeout 30 s), committing every operation in its own transaction; once with the ids our
  Client generates (time-ordered) and once with uuid4 ids (the seed's design as written);
- see-persistence: P GUI processes using `Client`, one writer process, the same operations;
- ceiling: one process running the same statements with executemany, 1000 operations a
  transaction: the limit of SQLite through Python here.

Workloads: audit events only; and a mix per workflow (create, running, 5 tasks each created,
running, 2 log lines, completed; 10 audit events; completed): 38 operations, 16 rows.
Then another program beside 4 flooding GUIs: plain sqlite3 inserting one workflow every 50 ms
(tools/other_writer.py), its write waits, the WAL's peak, and the GUIs' committed rows/s with
and without it in the same run (`--only other-writer` runs just this and prints it).
Then live views: watcher processes on the change feed beside 4 GUIs, commit -> delivered,
the writer's rows/s with 0, 1 and 8 watchers and with one stopped, and the polling fallback
with no writer (`--only feed`).
Then TCP with CURVE beside ipc: 4 GUIs and a writer over ipc, over TCP on the loopback with
CURVE, and over ipc again, their committed rows/s, write call and send -> visible (`--only tcp`).
Then reads on a database of 1,000,000 workflows, each beside the same SQL through raw sqlite3
(`--reads-only` runs just these and prints them). The same reads on PostgreSQL beside raw
psycopg run only alone: `--only reads-postgresql` (a throwaway cluster, or --postgresql-url).
Every figure is printed beside its baseline and as a ratio; each target says met / not met.
The benchmark reports; it never asserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .feed import FEED_QUICK_STOP_SECONDS, FEED_STOP_SECONDS
from .floors import busy_floor_lines, measure_busy_floors, measure_floor
from .formatting import fmt_ns
from .other_writer_section import OTHER_P, OTHER_QUICK_SECONDS, OTHER_SECONDS
from .postgresql_writes import (
    PG_QUICK_SECONDS,
    PG_QUICK_WARMUP,
    TAKEOVERS,
    TAKEOVERS_QUICK,
    run_postgresql_alone,
)
from .report import (
    POSTGRESQL_SECTION_KEY,
    kept_sections,
    render,
    render_feed_only,
    render_other_writer_only,
    render_reads_only,
    render_reads_postgresql_only,
    render_tcp_only,
    write_kept_section,
    write_plot,
)
from .results import Results
from .roles import is_role
from .roles import main as role_main
from .runner import failed_sections, run_all, run_one_section
from .settings import (
    DEFAULT_OUTPUT,
    FLOOD_BACKLOG_CAP,
    QUICK_FLOOD_BACKLOG_CAP,
    QUICK_PACED_SECONDS,
    QUICK_READ_BUDGET_S,
    QUICK_READ_WORKFLOWS,
    QUICK_SECONDS,
    ROOT,
    Settings,
)

log = logging.getLogger("bench")

# --only NAME (and --reads-only): the section's key in runner.SECTIONS, and how it is printed.
ONLY: dict[str, tuple[str, Callable[[Results], str]]] = {
    "other-writer": ("other-writer section", render_other_writer_only),
    "feed": ("feed section", render_feed_only),
    "tcp": ("tcp section", render_tcp_only),
    "reads": ("reads", render_reads_only),
    "reads-postgresql": ("reads on PostgreSQL", render_reads_postgresql_only),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python tools/bench.py --quick\n"
        "  python tools/bench.py --procs 1,4 --seconds 3 --no-write",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--procs", help="GUI process counts (default 1,2,4,8; quick 4)")
    parser.add_argument(
        "--seconds", type=float, help=f"seconds measured per cell (default 5; quick {QUICK_SECONDS:g})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small and fast: under a minute, same table shape"
    )
    parser.add_argument(
        "--read-workflows",
        type=int,
        help=f"workflows in the read database (default 1,000,000; quick {QUICK_READ_WORKFLOWS:,})",
    )
    parser.add_argument("--read-cache", type=Path, help="keep and reuse the read database in this directory")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the markdown report (default {DEFAULT_OUTPUT.relative_to(ROOT)}; quick: none)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no report")
    parser.add_argument(
        "--reads-only", action="store_true", help="run only the reads and print them (writes no report)"
    )
    parser.add_argument(
        "--floors", action="store_true", help="measure only the machine's call floors, print them, exit"
    )
    parser.add_argument(
        "--only",
        choices=["other-writer", "feed", "tcp", "reads-postgresql"],
        help="run one section alone and print it (writes no report): other-writer, another program"
        f" writing beside {OTHER_P} flooding GUIs; feed, live views (the change feed); tcp, TCP with"
        " CURVE beside ipc (4 GUIs each); reads-postgresql, the reads on PostgreSQL beside raw psycopg"
        " (use a small --read-workflows)",
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: run only the writes on PostgreSQL (4 GUIs through our writer beside naive"
        " PostgreSQL and COPY) and the take-over after SIGKILL, print them and write their section into"
        " the report (quick: no report unless --output)",
    )
    parser.add_argument(
        "--takeovers",
        type=int,
        help=f"--backend postgresql: SIGKILLs of the writer per backend (default {TAKEOVERS}; quick"
        f" {TAKEOVERS_QUICK}; 0: none)",
    )
    parser.add_argument(
        "--postgresql-url",
        help="reads-postgresql, --backend postgresql: a server where scratch databases may be made"
        " (default: a throwaway cluster)",
    )
    parser.add_argument(
        "--other-seconds",
        type=float,
        help=f"seconds of the phase with the other program writing (default {OTHER_SECONDS:g};"
        f" quick {OTHER_QUICK_SECONDS:g})",
    )
    parser.add_argument(
        "--feed-stop-seconds",
        type=float,
        help=f"seconds a watcher is stopped while the GUIs flood (default {FEED_STOP_SECONDS:g};"
        f" quick {FEED_QUICK_STOP_SECONDS:g})",
    )
    parser.add_argument(
        "--profile-writer", type=Path, metavar="DIR", help="run each writer under cProfile, profiles in DIR"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT end the run through every finally block, so no child outlives it."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one subprocess role)."""
    if is_role(sys.argv[1:] if argv is None else argv):
        return role_main(argv)
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT may arrive ignored in a background job
        signal.signal(signum, _exit_on_signal)

    procs = [int(p) for p in (args.procs or ("4" if args.quick else "1,2,4,8")).split(",") if p.strip()]
    if not procs or min(procs) < 1:
        print("bench.py: --procs needs positive integers, e.g. 1,2,4,8", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (QUICK_SECONDS if args.quick else 5.0)
    if args.floors:
        floor = measure_floor(seconds if args.seconds is not None else 2.0)
        if floor is not None:
            print(
                f"- alone, paced at 2,000 calls/s: p50 {fmt_ns(floor.p50)}, p99 {fmt_ns(floor.p99)},"
                f" p99.9 {fmt_ns(floor.p999)}, max {fmt_ns(floor.max)}"
            )
        busy_seconds = seconds if args.seconds is not None else 3.0
        for p in procs:
            for line in busy_floor_lines(measure_busy_floors(p, busy_seconds)):
                print(line)
        return 0
    output: Path | None = None
    if not args.no_write:
        output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    profile_dir = args.profile_writer.resolve() if args.profile_writer else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="see-bench-") as tmp:
        settings = Settings(
            procs=procs,
            seconds=seconds,
            warmup=min(1.0, max(0.2, seconds / 4)),
            read_workflows=args.read_workflows or (QUICK_READ_WORKFLOWS if args.quick else 1_000_000),
            read_budget_s=QUICK_READ_BUDGET_S if args.quick else 2.0,
            materialize_rows=2_000 if args.quick else 10_000,
            absent_cap=10_000 if args.quick else 50_000,
            flood_cap=QUICK_FLOOD_BACKLOG_CAP if args.quick else FLOOD_BACKLOG_CAP,
            quick=args.quick,
            workdir=Path(tmp),
            read_cache=args.read_cache.resolve() if args.read_cache else None,
            profile_dir=profile_dir,
            other_seconds=args.other_seconds or (OTHER_QUICK_SECONDS if args.quick else OTHER_SECONDS),
            feed_stop_seconds=args.feed_stop_seconds
            or (FEED_QUICK_STOP_SECONDS if args.quick else FEED_STOP_SECONDS),
            paced_seconds=QUICK_PACED_SECONDS if args.quick and args.seconds is None else seconds,
            postgresql_url=args.postgresql_url,
        )
        if args.backend == "postgresql":
            return _run_postgresql(settings, args, output)
        alone = ONLY.get(args.only or ("reads" if args.reads_only else ""))
        if alone is not None:  # one section alone: printed, never written
            load_key, render_alone = alone
            results = run_one_section(settings, load_key)
            print(render_alone(results))
            return 1 if failed_sections(results) else 0
        results = run_all(settings)
    report = render(results)
    print(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report + "\n" + kept_sections(output), encoding="utf-8")
        log.info("wrote %s", output)
        plot = write_plot(results, output)
        if plot is not None:
            with output.open("a", encoding="utf-8") as f:
                f.write(f"\n![write call latency]({plot.name})\n")
            log.info("wrote %s", plot)
    failures = failed_sections(results)
    if failures:
        log.error("measurements that could not be made: %s", ", ".join(failures))
        return 1
    return 0


def _run_postgresql(settings: Settings, args: argparse.Namespace, output: Path | None) -> int:
    """`--backend postgresql`: the PostgreSQL section alone, printed, and written into `output`."""
    takeovers = (
        args.takeovers if args.takeovers is not None else (TAKEOVERS_QUICK if args.quick else TAKEOVERS)
    )
    if args.quick and args.seconds is None:
        # Half a second is shorter than the round trip through what 4 flooding GUIs queue at
        # PostgreSQL's pace: no commit would be confirmed inside the window.
        settings = dataclasses.replace(settings, seconds=PG_QUICK_SECONDS, warmup=PG_QUICK_WARMUP)
    text, failed = run_postgresql_alone(settings, takeovers)
    print(text)
    if output is not None:
        write_kept_section(output, POSTGRESQL_SECTION_KEY, text)
        log.info("wrote the PostgreSQL section into %s", output)
    if failed:
        log.error("measurements that could not be made: %s", ", ".join(failed))
        return 1
    return 0
