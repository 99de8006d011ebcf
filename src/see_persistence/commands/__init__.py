"""The subcommands of `see-persistence`, one module each; COMMANDS is their order in --help."""

from __future__ import annotations

from . import backup, check, demo, keys, migrate, prune, query, restore, status, tail, writer
from .base import Command

COMMANDS: tuple[Command, ...] = (
    writer.COMMAND,
    status.COMMAND,
    tail.COMMAND,
    query.COMMAND,
    backup.COMMAND,
    restore.COMMAND,
    prune.COMMAND,
    check.COMMAND,
    migrate.COMMAND,
    keys.COMMAND,
    demo.COMMAND,
)

__all__ = ["COMMANDS", "Command"]
