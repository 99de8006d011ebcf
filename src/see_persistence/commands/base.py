"""What every subcommand shares: exit codes, the error that ends a command, its description."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LEASE_HELD, EXIT_LEASE_LOST = 0, 1, 2, 3, 4

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 lease held by another live writer, 4 lease lost,"
    " 5 prune still under way."
)


class CommandError(Exception):
    """Ends a command with a one-line message on stderr and an exit code (1 unless told)."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CommandError):
    """A bad argument found after parsing (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, texts for its --help, how to add its arguments and how to run it.

    The one line the top-level --help shows for it is in commands.COMMANDS, not here.
    """

    name: str
    description: str
    examples: tuple[str, ...]
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    takes_db: bool = True  # a --db that defaults to $SEE_PERSISTENCE_DB, else ~/.s_e_e/workflows.db
    takes_url: bool = False  # --db may be a postgresql:// URL: args.db is then a backends.DatabaseURL

    def epilog(self) -> str:
        """The --help epilog: the examples, one a line."""
        heading = "example:" if len(self.examples) == 1 else "examples:"
        return "\n".join([heading, *(f"  {example}" for example in self.examples)])
