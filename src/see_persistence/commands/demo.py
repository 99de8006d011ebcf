"""`see-persistence demo`: a writer and a few GUI-like processes on a demo database."""

from __future__ import annotations

import argparse
from pathlib import Path

from .base import Command


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo command's arguments."""
    parser.add_argument(
        "--db", metavar="PATH", default=None, help="the demo database (default: ./.demo/workflows.db)"
    )
    parser.add_argument("--guis", type=int, default=3, help="how many GUI-like processes (default 3)")
    parser.add_argument("--workflows", type=int, default=4, help="workflows per GUI process (default 4)")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print what a Reader sees."""
    from ..demo import run_demo

    db = Path(args.db) if args.db else Path.cwd() / ".demo" / "workflows.db"
    return run_demo(db, guis=args.guis, workflows=args.workflows)


COMMAND = Command(
    name="demo",
    description="Start a writer on a demo database, run three GUI-like processes that record "
    "workflows, tasks, logs and audit events, print what a Reader sees, stop the writer.",
    examples=("see-persistence demo --db /tmp/see-demo/workflows.db",),
    configure=configure,
    run=run,
    takes_db=False,  # its own --db, defaulting to ./.demo/workflows.db, never the real database
)
