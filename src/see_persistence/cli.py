"""The `see-persistence` command: writer, status, demo.

Exit codes: 0 success, 1 error, 2 usage, 3 the lease is held by another live writer,
4 this writer lost its lease to another (fenced off).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import locations
from .protocol import statements
from .protocol.errors import LeaseHeldError, LeaseLostError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LEASE_HELD, EXIT_LEASE_LOST = 0, 1, 2, 3, 4

log = logging.getLogger("see_persistence.cli")

_EPILOG = """\
examples:
  see-persistence writer --db ~/.s_e_e/workflows.db            # foreground, for supervisors
  see-persistence writer --db ~/.s_e_e/workflows.db --standby  # waits, takes over when the writer dies
  see-persistence status --db ~/.s_e_e/workflows.db --json
  see-persistence demo --db /tmp/demo/workflows.db

Every command takes --db; without it, $SEE_PERSISTENCE_DB, else ~/.s_e_e/workflows.db.
Exit codes: 0 ok, 1 error, 2 usage, 3 lease held by another live writer, 4 lease lost.
"""


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the database file (default: $SEE_PERSISTENCE_DB or ~/.s_e_e/workflows.db)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line."""
    parser = argparse.ArgumentParser(
        prog="see-persistence",
        description="Persistence layer of the S_E_E desktop app: one writer, many readers, one SQLite file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    writer = sub.add_parser(
        "writer",
        help="run the writer in the foreground",
        description="Hold the writer lease and commit what clients send, until SIGTERM or SIGINT.",
        epilog="example:\n  see-persistence writer --db ~/.s_e_e/workflows.db --standby",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_db(writer)
    writer.add_argument(
        "--standby", action="store_true", help="wait for the lease and take over when the writer dies"
    )
    writer.add_argument(
        "--synchronous",
        default="NORMAL",
        choices=["NORMAL", "FULL"],
        help="SQLite synchronous mode: NORMAL survives process crashes, FULL power loss too",
    )
    writer.add_argument(
        "--dead-letters-kept",
        type=int,
        default=statements.DEAD_LETTERS_KEPT,
        metavar="N",
        help="keep the newest N dead letters; older ones are dropped and counted"
        f" (default {statements.DEAD_LETTERS_KEPT})",
    )
    writer.add_argument("--quiet-if-held", action="store_true", help=argparse.SUPPRESS)

    status = sub.add_parser(
        "status",
        help="show the writer, the live instances and row counts",
        description="Show the writer lease, the live GUI instances and the row count of each table.",
        epilog="example:\n  see-persistence status --db ~/.s_e_e/workflows.db --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_db(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    demo = sub.add_parser(
        "demo",
        help="run a writer and three GUI-like processes, then show what they recorded",
        description="Start a writer on a demo database, run three GUI-like processes that record "
        "workflows, tasks, logs and audit events, print what a Reader sees, stop the writer.",
        epilog="example:\n  see-persistence demo --db /tmp/see-demo/workflows.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--db", metavar="PATH", default=None, help="the demo database (default: ./.demo/workflows.db)"
    )
    demo.add_argument("--guis", type=int, default=3, help="how many GUI-like processes (default 3)")
    demo.add_argument("--workflows", type=int, default=4, help="workflows per GUI process (default 4)")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _run_writer(args: argparse.Namespace) -> int:
    from .writer import Writer

    writer = Writer(
        args.db, standby=args.standby, synchronous=args.synchronous, dead_letters_kept=args.dead_letters_kept
    )
    try:
        writer.run()
    except LeaseHeldError as exc:
        if args.quiet_if_held:
            log.info("%s; exiting", exc)
        else:
            print(f"see-persistence writer: {exc}", file=sys.stderr)
        return EXIT_LEASE_HELD
    except LeaseLostError as exc:
        log.error("%s; this writer stops without committing anything more", exc)
        return EXIT_LEASE_LOST
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from .reader import Reader

    reader = Reader(args.db)
    writer = reader.get_writer_status()
    instances = reader.get_active_instances()
    counts = reader.count_rows()
    report: dict[str, Any] = {
        "database": str(reader.db_path),
        "writer": writer.model_dump(mode="json") if writer else None,
        "live_instances": [i.model_dump(mode="json") for i in instances],
        "rows": counts,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"database  {reader.db_path}")
    if writer is None:
        print("writer    none has ever run on this file")
    else:
        state = "alive" if writer.alive else ("released" if writer.released else "dead")
        print(
            f"writer    pid {writer.pid} on {writer.host}, {state}, epoch {writer.epoch},"
            f" since {writer.since.isoformat()}"
        )
        print(f"          endpoint {writer.endpoint}")
    print(f"instances {len(instances)} live")
    for instance in instances:
        print(f"          {instance.id}  pid {instance.pid}  last seq {instance.last_seq}")
    print("rows      " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    db = Path(args.db) if args.db else Path.cwd() / ".demo" / "workflows.db"
    return run_demo(db, guis=args.guis, workflows=args.workflows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    if getattr(args, "db", None) is not None or args.command != "demo":
        args.db = str(locations.resolve_db_path(args.db))
    try:
        if args.command == "writer":
            return _run_writer(args)
        if args.command == "status":
            return _status(args)
        return _demo(args)
    except FileNotFoundError as exc:
        print(f"see-persistence {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError) as exc:
        print(f"see-persistence {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
