"""The processes a run starts as `bench.py --role ...`: a GUI, the ceiling, a watcher.

A run starts dozens of them, so each imports only its role's modules, not the whole command's
(the report, every section): about 45 ms of CPU less per process.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .workloads import WORKLOADS

ROLES = ("gui", "ceiling", "watcher")


def is_role(argv: Sequence[str]) -> bool:
    """Whether this command line starts one of a run's processes."""
    return "--role" in argv


def parse_role_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of a role (internal: only the benchmark starts these)."""
    parser = argparse.ArgumentParser(description="one process of a benchmark run (internal)")
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--system", help="gui: the system's name in backends.BY_NAME")
    parser.add_argument("--db", required=True)
    parser.add_argument("--workload", choices=WORKLOADS)
    parser.add_argument("--seconds", type=float, help="ceiling: seconds of SQLite time")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role, logging warnings and worse to stderr (the parent keeps it in a log file)."""
    args = parse_role_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.role == "gui":
        from .gui import gui_main

        return gui_main(args)
    if args.role == "ceiling":
        from .ceiling import ceiling_main

        return ceiling_main(args)
    from .feed import watcher_main

    return watcher_main(args)
