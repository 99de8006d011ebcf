"""`see-persistence check`: integrity, foreign keys, schema version, file modes, lease; ok or FAIL."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocol import schema
from .base import EXIT_ERROR, EXIT_OK, Command
from .common import (
    LAYER_TABLES,
    describe_sqlite_error,
    is_server,
    open_database,
    schema_version,
    table_names,
)

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Outcome:
    """One check's verdict: passed or not, what it found, and whether that deserves a warning."""

    name: str
    ok: bool
    message: str
    warning: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the check command's arguments."""
    parser.add_argument("--json", action="store_true", help="print one JSON object per check")


def _permissions(reader: Reader) -> Outcome:
    # A file others can read gives them every record; one they can write, every record to forge.
    from ..writer.storage import OTHERS_BITS, companion_paths

    present = []
    for path in [reader.db_path, *companion_paths(reader.db_path)]:
        try:
            present.append((path, os.stat(path)))
        except FileNotFoundError:
            continue  # no such companion: SQLite has none open, or the file is not in that mode
        except OSError as exc:
            return Outcome("permissions", False, f"could not check: {exc}")
    exposed = [(path, info) for path, info in present if info.st_mode & OTHERS_BITS]
    if not exposed:
        modes = ", ".join(f"{path.name} {stat.S_IMODE(info.st_mode):04o}" for path, info in present)
        return Outcome("permissions", True, f"owner-only: {modes}")
    found = ", ".join(f"{path.name} {stat.S_IMODE(info.st_mode):04o}" for path, info in exposed)
    command = "chmod 600 " + " ".join(shlex.quote(str(path)) for path, _ in exposed)
    owners = sorted({info.st_uid for _, info in exposed} - {os.geteuid()})
    as_owner = f" (as their owner, uid {', '.join(map(str, owners))})" if owners else ""
    return Outcome("permissions", False, f"others can open {found}; run{as_owner}: {command}")


def _integrity(reader: Reader) -> Outcome:
    problems = [str(r[0]) for r in reader.query(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
    if problems == ["ok"]:
        return Outcome("integrity", True, "PRAGMA integrity_check: ok")
    more = "+" if len(problems) >= MAX_PROBLEMS else ""
    return Outcome("integrity", False, f"{len(problems)}{more} problems; first: {problems[0]}")


def _foreign_keys(reader: Reader) -> Outcome:
    rows = reader.query("PRAGMA foreign_key_check")
    if not rows:
        return Outcome("foreign_keys", True, "PRAGMA foreign_key_check: no orphan rows")
    tables: dict[str, int] = {}
    for row in rows:
        tables[str(row[0])] = tables.get(str(row[0]), 0) + 1
    found = ", ".join(f"{count} in {table}" for table, count in sorted(tables.items()))
    return Outcome("foreign_keys", False, f"{len(rows)} rows point at missing parents: {found}")


def _schema(reader: Reader) -> Outcome:
    tables = table_names(reader)
    version = schema_version(reader, tables)
    code = schema.SCHEMA_VERSION
    if version is None:
        return Outcome("schema", False, "no version recorded in schema_version")
    expected = [*schema.SEED_TABLES, "schema_version"]
    if version >= 2:
        expected += LAYER_TABLES[:3]
    if version >= 3:
        expected.append("counters")
    if version >= 5:
        expected.append("task_log_lines")
    if version >= 6:
        expected.append("prune_jobs")
    missing = [name for name in expected if name not in tables]
    if missing:
        return Outcome("schema", False, f"version {version} but tables missing: {', '.join(missing)}")
    if version < code:
        return Outcome(
            "schema",
            False,
            f"version {version}, older than this code's {code}: a writer upgrades it when it starts",
        )
    if version > code:
        return Outcome(
            "schema", True, f"version {version}, newer than this code's {code} (changes are additive)"
        )
    return Outcome("schema", True, f"version {version}, the one this code knows")


def _lease(reader: Reader) -> Outcome:
    from ..writer.lease import LEASE_STALE_AFTER_S

    writer = reader.get_writer_status()
    if writer is None:
        return Outcome("lease", True, "no writer has held the lease yet")
    if writer.released is not None:
        return Outcome("lease", True, f"released by pid {writer.pid} at {writer.released.isoformat()}")
    if writer.alive:
        age = writer.heartbeat_age_s  # on CLOCK_BOOTTIME where it can: a wall-clock step is no silence
        if age is None:
            age = (datetime.now(timezone.utc) - writer.heartbeat).total_seconds()
        if age > LEASE_STALE_AFTER_S:
            return Outcome(
                "lease",
                True,
                f"warning: held by pid {writer.pid}, alive, but its heartbeat is {age:.0f} s old (frozen?)",
                warning=True,
            )
        return Outcome(
            "lease", True, f"held by live writer pid {writer.pid} on {writer.host}, epoch {writer.epoch}"
        )
    return Outcome(
        "lease",
        True,
        f"warning: holder pid {writer.pid} died without releasing it; the next writer takes over",
        warning=True,
    )


CHECKS: tuple[tuple[str, Callable[[Reader], Outcome]], ...] = (
    ("integrity", _integrity),
    ("foreign_keys", _foreign_keys),
    ("schema", _schema),
    ("permissions", _permissions),
    ("lease", _lease),
)


def _server_integrity(reader: Reader) -> Outcome:
    return Outcome(
        "integrity",
        True,
        "not SQLite's to check: the server guards its own pages (initdb --data-checksums; the"
        " amcheck extension's bt_index_check looks deeper)",
    )


def _server_foreign_keys(reader: Reader) -> Outcome:
    return Outcome("foreign_keys", True, "enforced by PostgreSQL at every write: no orphan rows can exist")


def _server_permissions(reader: Reader) -> Outcome:
    return Outcome(
        "permissions", True, "who may connect is the server's to say (pg_hba.conf, roles and GRANTs)"
    )


SERVER_CHECKS: tuple[tuple[str, Callable[[Reader], Outcome]], ...] = (
    ("integrity", _server_integrity),
    ("foreign_keys", _server_foreign_keys),
    ("schema", _schema),
    ("permissions", _server_permissions),
    ("lease", _lease),
)


def run(args: argparse.Namespace) -> int:
    """Run every check; exit 0 only when all pass."""
    server = is_server(args.db)
    # check reports the damage of a file it can open
    reader = open_database(args.db if server else Path(args.db), accept_damaged=True)
    outcomes = []
    for name, check in SERVER_CHECKS if server else CHECKS:
        try:
            outcome = check(reader)
        except sqlite3.Error as exc:  # a damaged file fails the check that tripped on it
            outcome = Outcome(name, False, f"could not check: {describe_sqlite_error(exc)}")
        except reader.read_errors as exc:  # the server's error, on PostgreSQL
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            outcome = Outcome(name, False, f"could not check: {first}")
        outcomes.append(outcome)
        if args.json:
            print(json.dumps(asdict(outcome)), flush=True)
        else:
            print(f"{'ok' if outcome.ok else 'FAIL':<4}  {name:<12}  {outcome.message}", flush=True)
    reader.close()
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_ERROR


COMMAND = Command(
    name="check",
    description="Run PRAGMA integrity_check and foreign_key_check, check that schema_version is present "
    "and not older than this code's, that only the owner can open the database file and its -wal, -shm "
    "and -journal (else it prints the chmod to run), and that the writer lease is sane (none, held by a "
    "live writer, or released; a dead holder that did not release is a warning). One line per check "
    "with ok or FAIL; exit code 0 only when every check passes, 1 otherwise.",
    examples=("see-persistence check", "see-persistence check --db /srv/backups/workflows.db --json"),
    configure=configure,
    run=run,
    takes_url=True,
)
