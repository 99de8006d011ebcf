"""The subcommands of `see-persistence`, one module each, named after the command.

COMMANDS lists them in their --help order with the one line --help shows for each, so that
building the parser loads no command's module: a command's process loads only its own
(`load`), and `--help` none, where loading all of them cost every command about 50 ms of CPU
(zmq, psutil, the keys, PostgreSQL's migration tables).
"""

from __future__ import annotations

import importlib

from .base import Command

COMMANDS: tuple[tuple[str, str], ...] = (
    ("writer", "run the writer in the foreground"),
    ("status", "show the writer, its throughput, dead letters, WAL size, instances and row counts"),
    ("tail", "print the latest audit events; --follow prints new ones as they are committed"),
    ("query", "run read-only SQL and print the result"),
    ("backup", "copy the database, consistently, while the writer keeps writing"),
    ("restore", "replace the database with a backup (no writer may be running)"),
    ("prune", "delete finished workflows older than an age, with their tasks and audit events"),
    ("check", "check integrity, foreign keys, the schema version, file modes and the lease"),
    ("migrate", "copy an SQLite file into PostgreSQL or back: one snapshot, resumable, verified"),
    ("keys", "create, list, allow, revoke and show the CURVE keys of the TCP transport"),
    ("demo", "run a writer and three GUI-like processes, then show what they recorded"),
)


def load(name: str) -> Command:
    """The Command of the subcommand `name` (one of COMMANDS), its module imported now."""
    command: Command = importlib.import_module(f"{__name__}.{name}").COMMAND
    return command


__all__ = ["COMMANDS", "Command", "load"]
