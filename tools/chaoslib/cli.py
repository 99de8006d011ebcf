"""The command line of tools/chaos.py: its options, the defaults a soak changes, and the role to play.

Started by a user, the tool is the supervisor of a run (`run.run_supervisor`); started by the
supervisor with --client-role, it is one client (`client.run_client`).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys

import other_writer

from .client import DEFAULT_MAX_BUFFERED, run_client
from .run import run_supervisor

DESCRIPTION = (
    "Chaos/soak runner: proves guarantees 4-6 (atomic batches, nothing lost or doubled, one writer)."
)
SOAK_MINUTES = 60.0
SOAK_CLIENT_SECONDS = 60.0  # each client records about this long (x 0.5-1.5); a new one takes its slot
SOAK_KILL_EVERY_S = 240.0  # a fault every few minutes: an hour sees about fifteen takeovers
SOAK_MAX_DB_MB = 8192  # past this, checked records are pruned: an hour at saturation writes tens of GB
SAMPLE_EVERY_S = 1.0
SERIES_EVERY_S = 300.0


def build_parser() -> argparse.ArgumentParser:
    """The command line of the tool (the supervisor's options and the client role's)."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def resolved_later(flag: str, help_text: str) -> None:
        """A float option left None when not given: _resolve_defaults fills it in, --soak or not."""
        parser.add_argument(flag, type=float, default=None, help=help_text)

    parser.add_argument("--clients", type=int, default=4, help="client processes at a time (default 4)")
    resolved_later("--seconds", "how long the clients record (default 30; soak 3600)")
    resolved_later("--minutes", "the same in minutes (e.g. --soak --minutes 60)")
    resolved_later("--kill-every", f"mean seconds between faults (default 2; soak {SOAK_KILL_EVERY_S:g})")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="saturation for --minutes: clients replaced as they finish and checked as they exit, the"
        " other program on, checked records pruned past --max-db-mb",
    )
    parser.add_argument(
        "--client-seconds",
        type=float,
        default=SOAK_CLIENT_SECONDS,
        help=f"soak: each client records about this long, x 0.5-1.5 (default {SOAK_CLIENT_SECONDS:g})",
    )
    resolved_later(
        "--other-interval",
        "another program inserts a workflow through plain sqlite3 every this many seconds"
        f" (default off; soak {other_writer.DEFAULT_INTERVAL_S:g}; 0 = off)",
    )
    parser.add_argument(
        "--max-db-mb",
        type=int,
        default=SOAK_MAX_DB_MB,
        help=f"soak: past this size, records already checked are pruned (default {SOAK_MAX_DB_MB};"
        " 0 = never)",
    )
    parser.add_argument(
        "--keep-manifests",
        action="store_true",
        help="soak: keep every manifest, not only those with a discrepancy",
    )
    parser.add_argument(
        "--sample-every", type=float, default=SAMPLE_EVERY_S, help="seconds between looks at the WAL and RSS"
    )
    resolved_later(
        "--series-every",
        f"the report's time series: seconds per row (default: the whole run; soak {SERIES_EVERY_S:g})",
    )
    parser.add_argument(
        "--stop-fraction",
        type=float,
        default=0.25,
        help="share of faults that SIGSTOP the writer instead of SIGKILL (default 0.25)",
    )
    parser.add_argument("--db", help="the database to create (default: workflows.db in the run directory)")
    parser.add_argument("--run-dir", help="where logs, manifests and the report go (default: a new temp dir)")
    parser.add_argument("--seed", type=int, default=None, help="seeds the faults and the workloads")
    parser.add_argument("--flush-timeout", type=float, default=60.0, help="each client's final flush (s)")
    parser.add_argument(
        "--max-buffered",
        type=int,
        default=DEFAULT_MAX_BUFFERED,
        help="a client holds back while this many of its operations are unconfirmed (default 20000)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--client-role", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="c0", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def _resolve_defaults(args: argparse.Namespace) -> None:
    """The defaults that depend on --soak."""
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    elif args.seconds is None:
        args.seconds = SOAK_MINUTES * 60 if args.soak else 30.0
    if args.kill_every is None:
        args.kill_every = SOAK_KILL_EVERY_S if args.soak else 2.0
    if args.other_interval is None:
        args.other_interval = other_writer.DEFAULT_INTERVAL_S if args.soak else 0.0
    if args.series_every is None:
        args.series_every = SERIES_EVERY_S if args.soak else args.seconds
    if not args.soak:
        args.max_db_mb = 0  # pruning needs the records checked as the run goes: a soak's


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor, or one client when started with --client-role."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.client_role:
        if not args.db or not args.run_dir:
            parser.error("--client-role needs --db and --run-dir")
        return run_client(args)
    _resolve_defaults(args)
    if args.clients < 1 or args.seconds <= 0 or args.kill_every <= 0 or not 0 <= args.stop_fraction <= 1:
        parser.error("--clients >= 1, --seconds > 0, --kill-every > 0 and 0 <= --stop-fraction <= 1")
    if (
        args.other_interval < 0
        or args.sample_every <= 0
        or args.series_every <= 0
        or args.client_seconds <= 0
    ):
        parser.error("--other-interval >= 0; --sample-every, --series-every and --client-seconds > 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return run_supervisor(args)
