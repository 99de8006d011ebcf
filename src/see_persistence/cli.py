"""The `see-persistence` command: the writer, and the day-to-day commands around it.

Each subcommand lives in its own module under `see_persistence.commands`; this module builds
the parser, configures logging (the library never does) and turns every failure into one
line on stderr and an exit code: 0 success, 1 error, 2 usage, 3 the lease is held by another
live writer, 4 this writer lost its lease to another (fenced off).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, backends, locations
from .commands import COMMANDS, load
from .commands.base import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_LEASE_HELD,
    EXIT_LEASE_LOST,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    CommandError,
)
from .commands.logformat import LOG_FORMATS, configure_logging
from .protocol.errors import SeePersistenceError

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LEASE_HELD",
    "EXIT_LEASE_LOST",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_INTERRUPTED = 130  # the shell's convention for a command ended by Ctrl-C

HELP_WIDTH = 100

log = logging.getLogger("see_persistence.cli")

_EPILOG = f"""\
examples:
  see-persistence writer --db ~/.s_e_e/workflows.db            # foreground, for supervisors
  see-persistence writer --db ~/.s_e_e/workflows.db --standby  # waits, takes over when the writer dies
  see-persistence status --json
  see-persistence status --watch                               # redrawn as changes are committed
  see-persistence tail --follow --type workflow_completed
  see-persistence query "SELECT status, COUNT(*) FROM workflow_executions GROUP BY status"
  see-persistence backup ~/backups/workflows.db
  see-persistence restore ~/backups/workflows.db               # with no writer running
  see-persistence prune --older-than 30d --dry-run
  see-persistence check
  see-persistence migrate ~/.s_e_e/workflows.db postgresql://see@db.example/see
  see-persistence --log-format json writer                     # JSON log lines on stderr
  see-persistence demo --db /tmp/demo/workflows.db

Every command but migrate (SRC DEST) takes --db; without it, $SEE_PERSISTENCE_DB, else
~/.s_e_e/workflows.db.
{EXIT_CODES_HELP} An interrupted command exits with 130.
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `message` in one line and exit with the usage code."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _logging_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # Accepted before and after the subcommand; after it they are set only when given, and
    # the top-level --help is where they are described.
    parser.add_argument(
        "--log-level",
        default="INFO" if top_level else argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log records of this level and above on stderr (default INFO)"
        if top_level
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--log-format",
        default="text" if top_level else argparse.SUPPRESS,
        choices=LOG_FORMATS,
        help="text, or json: one JSON object per line (time, level, logger, pid, message)"
        if top_level
        else argparse.SUPPRESS,
    )


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the database file (default: $SEE_PERSISTENCE_DB or ~/.s_e_e/workflows.db), or a"
        " postgresql:// URL (every command but demo)",
    )


class _CommandParser(_Parser):
    """A subcommand's parser, completed from the command's module only once that command is chosen.

    The top-level --help and a usage error need only the names and one-line helps (COMMANDS);
    the module, its imports and its arguments are loaded when argparse hands this parser its
    arguments, or when its help is asked for.
    """

    def __init__(self, *args: Any, command_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._command_name = command_name
        self._loaded = False

    def _complete(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        command = load(self._command_name)
        self.description = textwrap.fill(command.description, HELP_WIDTH)
        self.epilog = command.epilog() + f"\n\n{EXIT_CODES_HELP}"
        if command.takes_db:
            _add_db(self)
        command.configure(self)
        _logging_options(self, top_level=False)
        self.set_defaults(spec=command)

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands of a command (keys ACTION) get plain parsers: they have no module to load."""
        kwargs.setdefault("parser_class", _Parser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Load the command, then parse its arguments (argparse calls this once it chose it)."""
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        """The command's --help, its module loaded for it."""
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:
        """The command's usage line, its module loaded for it."""
        self._complete()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line; a command's module loads when it is chosen."""
    parser = _Parser(
        prog="see-persistence",
        description="Persistence layer of the S_E_E desktop app: one writer, many readers, one SQLite file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _logging_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for name, summary in COMMANDS:
        sub.add_parser(
            name, help=summary, command_name=name, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def _run(command: Command, args: argparse.Namespace) -> int:
    name = f"see-persistence {command.name}"
    try:
        return command.run(args)
    except CommandError as exc:
        print(f"{name}: {_one_line(exc.message)}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader of our output went away (`... | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, sqlite3.Error, SeePersistenceError) as exc:
        print(f"{name}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # never a traceback for the user; --log-level DEBUG shows it
        log.debug("unexpected error", exc_info=True)
        print(
            f"{name}: unexpected error: {type(exc).__name__}: {_one_line(str(exc))}"
            " (--log-level DEBUG shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    command: Command = args.spec
    if command.takes_db or args.db is not None:
        try:
            # A Path, absolute; or, for a command that takes one, a server's URL.
            implemented = backends.WRITER_BACKENDS if command.takes_url else backends.IMPLEMENTED_BACKENDS
            args.db = locations.resolve_database(args.db, implemented)
        except SeePersistenceError as exc:  # a database URL this version cannot use
            print(f"see-persistence {command.name}: {_one_line(str(exc))}", file=sys.stderr)
            return EXIT_ERROR
    return _run(command, args)
