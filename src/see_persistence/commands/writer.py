"""`see-persistence writer`: the writer in the foreground, for supervisors."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from ..backends import DatabaseURL
from ..leases import REMOTE_SILENCE_S
from ..protocol import statements
from ..protocol.errors import LeaseHeldError, LeaseLostError
from .base import EXIT_LEASE_HELD, EXIT_LEASE_LOST, EXIT_OK, Command, CommandError, UsageError

log = logging.getLogger("see_persistence.cli")

# FOR TESTS ONLY: a shorter stale limit for this writer process (seconds), so that a test can
# show in seconds that no unit of the writer's work outlasts it (a prune over enough rows that
# one transaction would), or that a frozen writer is replaced, without waiting out the real
# limits. It sets writer/lease.py's LEASE_STALE_AFTER_S, and SELF_FENCE_AFTER_S and
# LOCKED_OUT_KILL_AFTER_S in the same proportion to it as there; read only here, by the
# `writer` command. Not for production: every writer and standby of a file must agree on it.
STALE_LIMIT_ENV = "SEE_PERSISTENCE_TEST_LEASE_STALE_AFTER_S"

# The writer allocates a few short-lived containers per operation; with CPython's default
# (700) its youngest generation is collected every few dozen operations, each time walking
# the batch in flight. Measured with tools/profile_writer.py's apply loop: 3-6 % of its CPU.
WRITER_GC_YOUNGEST_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Collect the writer process's youngest objects less often; exempt what startup loaded.

    Only for the `writer` command's own process: an application embedding Writer keeps its
    collector as it set it.
    """
    gc.collect()
    gc.freeze()  # modules, schema, statements: never garbage, never walked again
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(WRITER_GC_YOUNGEST_THRESHOLD, middle, oldest)


def apply_test_stale_limit() -> None:
    """Shorten the lease's stale limit if $SEE_PERSISTENCE_TEST_LEASE_STALE_AFTER_S says so (tests only)."""
    text = os.environ.get(STALE_LIMIT_ENV)
    if not text:
        return
    try:
        stale_s = float(text)
    except ValueError:
        stale_s = math.nan
    if not (stale_s > 0 and math.isfinite(stale_s)):
        raise CommandError(f"${STALE_LIMIT_ENV} must be a positive number of seconds, got {text!r}")
    from ..writer import lease

    scale = stale_s / lease.LEASE_STALE_AFTER_S
    lease.LEASE_STALE_AFTER_S = stale_s
    lease.SELF_FENCE_AFTER_S *= scale
    lease.LOCKED_OUT_KILL_AFTER_S *= scale
    log.warning(
        "for tests: lease stale after %g s, a transaction overruns after %g s,"
        " a stale holder keeping the write lock is killed after %g s ($%s)",
        stale_s,
        lease.SELF_FENCE_AFTER_S,
        lease.LOCKED_OUT_KILL_AFTER_S,
        STALE_LIMIT_ENV,
    )


def positive_number(unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number of `unit` above zero."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number of {unit}, got {text!r}")
        return value

    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the writer command's arguments."""
    parser.add_argument(
        "--standby", action="store_true", help="wait for the lease and take over when the writer dies"
    )
    parser.add_argument(
        "--synchronous",
        default="NORMAL",
        choices=["NORMAL", "FULL"],
        help="SQLite synchronous mode: NORMAL survives process crashes, FULL power loss too",
    )
    parser.add_argument(
        "--dead-letters-kept",
        type=int,
        default=statements.DEAD_LETTERS_KEPT,
        metavar="N",
        help="keep the newest N dead letters; older ones are dropped and counted"
        f" (default {statements.DEAD_LETTERS_KEPT})",
    )
    parser.add_argument(
        "--dead-letters-kept-bytes",
        type=int,
        default=statements.DEAD_LETTER_BYTES_KEPT,
        metavar="N",
        help="keep at most N bytes of raw received data in dead letters together (each one keeps"
        f" up to {statements.DEAD_LETTER_RAW_KEPT_BYTES}); past it the oldest are dropped and counted"
        f" (default {statements.DEAD_LETTER_BYTES_KEPT})",
    )
    parser.add_argument(
        "--instances-kept-days",
        type=positive_number("days"),
        default=statements.INSTANCES_KEPT_S / 86_400,
        metavar="N",
        help="delete the rows of GUI instances ended or dead for more than N days (their workflows"
        f" stay; default {statements.INSTANCES_KEPT_S // 86_400}); live instances are never deleted",
    )
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="take an SQLite file that holds tables neither S_E_E's nor this layer's, adding the"
        " layer's tables beside them (without it such a file is refused and left untouched)",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=positive_number("seconds"),
        default=None,
        metavar="SECONDS",
        help="stop cleanly once no GUI instance has been alive and no message has arrived for"
        " SECONDS (for a writer a GUI starts; by default the writer runs until stopped)",
    )
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="where to listen, repeatable: 'ipc' (the owner-only sockets derived from the database"
        " path) or tcp://HOST:PORT (CURVE-encrypted, only for client keys on the allow-list; PORT 0"
        " picks free ports, a fixed PORT puts the commit notices on PORT+1). Default: ipc where"
        " libzmq has it, else tcp://127.0.0.1:0. The lease row records what was bound",
    )
    parser.add_argument(
        "--keys-dir",
        metavar="DIR",
        default=None,
        help="the key directory for TCP (default: $SEE_PERSISTENCE_KEYS_DIR or ~/.s_e_e/keys)",
    )
    parser.add_argument(
        "--remote-silence",
        type=positive_number("seconds"),
        default=REMOTE_SILENCE_S,
        metavar="SECONDS",
        help="mark a GUI instance on another host dead once neither a message nor a heartbeat of it"
        f" arrived for SECONDS (default {REMOTE_SILENCE_S:g}); instances on this host are judged by"
        " their pid",
    )
    parser.add_argument("--quiet-if-held", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run the writer until SIGTERM or SIGINT (or, with --exit-when-idle, until nobody needs it)."""
    from ..writer import Writer

    tune_garbage_collector()
    apply_test_stale_limit()
    # The options both backends take; the file-only ones are the SQLite writer's alone.
    options: dict[str, Any] = {
        "standby": args.standby,
        "dead_letters_kept": args.dead_letters_kept,
        "dead_letter_bytes_kept": args.dead_letters_kept_bytes,
        "listen": args.listen,
        "keys_dir": args.keys_dir,
        "instances_kept_s": args.instances_kept_days * 86_400,
        "remote_silence_s": args.remote_silence,
    }
    if isinstance(args.db, DatabaseURL):
        return _run_on_postgresql(args, args.db, options)
    writer = Writer(
        args.db,
        synchronous=args.synchronous,
        adopt=args.adopt,
        exit_when_idle_s=args.exit_when_idle,
        **options,
    )

    def describe(exc: BaseException) -> str:
        # SQLite's own messages name no file; every error of this command names the database.
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{writer.db_path}: {first_line}"

    return _serve(writer.run, args, sqlite3.Error, describe)


def _run_on_postgresql(args: argparse.Namespace, database: DatabaseURL, options: dict[str, Any]) -> int:
    """The writer of a PostgreSQL database (writer/pg_service.py); the file-only options are refused."""
    file_only = [
        (args.synchronous != "NORMAL", "--synchronous (durability is the server's: synchronous_commit)"),
        (args.adopt, "--adopt"),
        (args.exit_when_idle is not None, "--exit-when-idle"),
    ]
    refused = [name for given, name in file_only if given]
    if refused:
        raise UsageError(f"not for a PostgreSQL database: {', '.join(refused)}")
    import psycopg

    from ..writer.pg_service import PostgresWriter

    writer = PostgresWriter(database.url, **options)

    def describe(exc: BaseException) -> str:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        named = database.redacted() in first_line  # the writer's own messages name it already
        return first_line if named else f"{database}: {first_line}"

    return _serve(writer.run, args, psycopg.Error, describe)


def _serve(
    run_writer: Callable[[], None],
    args: argparse.Namespace,
    db_error: type[BaseException],
    describe: Callable[[BaseException], str],
) -> int:
    """Run a writer; turn how it ended into this command's exit code (a database error: its message)."""
    try:
        run_writer()
    except db_error as exc:
        raise CommandError(describe(exc)) from None
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


COMMAND = Command(
    name="writer",
    description="Hold the writer lease and commit what clients send, until SIGTERM or SIGINT"
    " (or, with --exit-when-idle, until no GUI needs it). A missing directory is created only for"
    " the default location (~/.s_e_e); an SQLite file with tables neither S_E_E's nor this layer's"
    " is refused unless --adopt.",
    examples=(
        "see-persistence writer --db ~/.s_e_e/workflows.db",
        "see-persistence writer --db ~/.s_e_e/workflows.db --standby",
        "see-persistence writer --db ~/data/app.db --adopt",
        "see-persistence writer --listen ipc --listen tcp://127.0.0.1:0",
        "see-persistence writer --db postgresql://writer@db.example/flows --listen tcp://10.0.0.5:5570",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
