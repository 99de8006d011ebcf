"""`see-persistence migrate SRC DEST`: an SQLite file into PostgreSQL, or back, verified.

How it stays exact (migrate_sides.py has the two ends, migrate_tables.py what is copied):

- The source is read in one snapshot (one SQLite read transaction; one PostgreSQL REPEATABLE
  READ transaction) while its writer keeps committing; the report names the snapshot's point
  (the source writer's commit number).
- Each table is streamed in key order and written in chunks of CHUNK_ROWS; each chunk commits
  together with its record (last key, row count, checksum) in the destination's progress
  table. After an interruption (kill -9 included) the next run takes a new snapshot, streams
  the source again, and for every recorded chunk compares the source's rows in that key
  range with the record: a range that changed since (an update, an insert, a delete) is
  made equal to the new snapshot, the others are left alone; then it carries on after the
  last chunk. So the result is always exactly one snapshot of the source: the last run's.
- At the end every table is read back from the destination and its count and checksum
  compared with the source's; only then is the progress table dropped (and an SQLite file
  given its name).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import backends, locations
from ..protocol.errors import SeePersistenceError
from .base import Command, CommandError, UsageError
from .common import open_database
from .migrate_sides import (
    Chunk,
    Destination,
    PostgresDestination,
    PostgresSource,
    Source,
    SqliteDestination,
    SqliteSource,
)
from .migrate_tables import MIGRATED_TABLES, NOT_MIGRATED, Checksum, TableSpec, declared_types
from .progress import ProgressBar

log = logging.getLogger("see_persistence.cli.migrate")

CHUNK_ROWS = 5000
PLAIN_PROGRESS_INTERVAL_S = 5.0  # without a terminal: a line at most this often while a table copies


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the migrate command's arguments (SRC and DEST, no --db: both are named)."""
    parser.set_defaults(db=None)
    parser.add_argument(
        "source", metavar="SRC", help="the database to copy: an SQLite file or a postgresql:// URL"
    )
    parser.add_argument(
        "dest",
        metavar="DEST",
        help="where to copy it: a postgresql:// URL of a database without records, or a new SQLite file",
    )


class _Progress:
    """A bar on stderr at a terminal; otherwise a plain line per table, and every few seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.bar = ProgressBar("migrate", unit="rows")
        self._said_at = time.monotonic()

    def advance(self, table: str, rows: int) -> None:
        self.done += rows
        if self.bar.enabled:
            self.bar(min(self.done, self.total), self.total)
        elif time.monotonic() - self._said_at >= PLAIN_PROGRESS_INTERVAL_S:
            self._said_at = time.monotonic()
            self.say(f"{table}: {self.done} of {self.total} rows")

    def say(self, line: str) -> None:
        self.bar.finish()
        print(f"migrate: {line}", file=sys.stderr, flush=True)


def _resolve(value: str) -> Any:
    try:
        return locations.resolve_database(value, backends.READER_AND_CLIENT_BACKENDS)
    except SeePersistenceError as exc:
        raise UsageError(str(exc)) from None


def _columns(spec: TableSpec, source: Source, dest: Destination) -> list[str] | None:
    found = source.columns(spec.name)
    if found is None:
        return None  # a source from before the table existed
    known = set(dest.columns(spec.name))
    extra = [c for c in found if c not in known]
    if extra:
        raise CommandError(
            f"{source.description}: {spec.name} has columns this version does not know ({', '.join(extra)});"
            " migrate with the see-persistence that wrote it"
        )
    return found


def _key_of(spec: TableSpec, columns: Sequence[str]) -> list[int]:
    return [columns.index(k) for k in spec.key]


def _copy_table(
    spec: TableSpec, columns: list[str], source: Source, dest: Destination, progress: _Progress
) -> tuple[Checksum, int, int]:
    """Stream one table into `dest`; (the source's checksum, chunks re-copied, chunks kept)."""
    stored = dest.chunks(spec.name)
    key_at = _key_of(spec, columns)
    total = Checksum(spec.name, columns)
    recopied = kept = 0
    index = 0  # the stored chunk the rows belong to, while there are stored chunks
    buffer: list[tuple[Any, ...]] = []
    part = Checksum(spec.name, columns)
    number = stored[-1].number + 1 if stored else 0
    last_key: tuple[Any, ...] | None = None

    def close_stored() -> None:
        nonlocal index, buffer, part, recopied, kept
        chunk = stored[index]
        if (part.count, part.total) != (chunk.count, chunk.checksum):
            lo = stored[index - 1].hi if index > 0 else None
            dest.reconcile_chunk(
                spec, columns, lo, buffer, Chunk(chunk.number, chunk.hi, part.count, part.total)
            )
            recopied += 1
        else:
            kept += 1
        progress.advance(spec.name, len(buffer))
        index += 1
        buffer, part = [], Checksum(spec.name, columns)

    def commit_new() -> None:
        nonlocal buffer, part, number
        assert last_key is not None
        dest.commit_chunk(spec, columns, buffer, Chunk(number, last_key, part.count, part.total))
        progress.advance(spec.name, len(buffer))
        number += 1
        buffer, part = [], Checksum(spec.name, columns)

    for row in source.rows(spec, columns):
        key = tuple(row[i] for i in key_at)
        while index < len(stored) and key > stored[index].hi:
            close_stored()
        # Times are written in the one form both backends agree on (migrate_tables.py).
        values = part.canonical(row)
        row = _written_form(spec.name, columns, row, values)
        part.add_canonical(values)
        total.add_canonical(values)
        buffer.append(row)
        last_key = key
        if index >= len(stored) and len(buffer) >= CHUNK_ROWS:
            commit_new()
    while index < len(stored):
        close_stored()
    if buffer:
        commit_new()
    return total, recopied, kept


def _written_form(
    table: str, columns: Sequence[str], row: tuple[Any, ...], values: list[Any]
) -> tuple[Any, ...]:
    """The row as written: instants in their canonical text, everything else as read."""
    types = declared_types()[table]
    return tuple(
        values[i] if types.get(column) == "TIMESTAMP" else value
        for i, (column, value) in enumerate(zip(columns, row, strict=True))
    )


def _verify(spec: TableSpec, columns: list[str], dest: Destination, expected: Checksum) -> None:
    found = Checksum(spec.name, columns)
    for row in dest.rows(spec.name, columns):
        found.add(row)
    if (found.count, found.total) != (expected.count, expected.total):
        raise CommandError(
            f"verification failed for {spec.name}: the source has {expected.count} rows (checksum"
            f" {expected.hex}), {dest.description} {found.count} (checksum {found.hex}); run migrate"
            " again to repair it"
        )


def _open(src: Any, dest: Any) -> tuple[Source, Destination]:
    if isinstance(src, backends.DatabaseURL) == isinstance(dest, backends.DatabaseURL):
        both = "PostgreSQL databases" if isinstance(src, backends.DatabaseURL) else "SQLite files"
        tool = (
            "pg_dump SRC | pg_restore -d DEST"
            if isinstance(src, backends.DatabaseURL)
            else "see-persistence backup"
        )
        raise UsageError(f"SRC and DEST are both {both}: migrate copies between the two backends; use {tool}")
    open_database(src).close()  # one-line refusal of a missing, foreign or unreachable source
    source: Source = PostgresSource(src) if isinstance(src, backends.DatabaseURL) else SqliteSource(src)
    try:
        destination: Destination = (
            PostgresDestination(dest) if isinstance(dest, backends.DatabaseURL) else SqliteDestination(dest)
        )
    except BaseException:
        source.close()
        raise
    return source, destination


def run(args: argparse.Namespace) -> int:
    """Copy every migrated table from SRC into DEST in one snapshot, resumably, and verify it."""
    src, dest = _resolve(args.source), _resolve(args.dest)
    # Creating the destination's schema is the writer's code, which tells of it at INFO: here
    # that is a step of the migration, not news.
    schema_log = logging.getLogger("see_persistence.writer")
    schema_log.setLevel(max(schema_log.getEffectiveLevel(), logging.WARNING))
    started = time.monotonic()
    source, destination = _open(src, dest)
    try:
        point = source.point()
        resumed = destination.prepare(source.description, point)
        plan = []
        for spec in MIGRATED_TABLES:
            columns = _columns(spec, source, destination)
            if columns is not None:
                plan.append((spec, columns, source.count(spec.name)))
        progress = _Progress(sum(count for _, _, count in plan))
        verb = "resuming the copy of" if resumed else "copying"
        progress.say(f"{verb} {source.description} into {destination.description} at the source's {point}")
        results = []
        for spec, columns, _ in plan:
            checksum, recopied, kept = _copy_table(spec, columns, source, destination, progress)
            results.append((spec, columns, checksum))
            if not progress.bar.enabled:
                note = f" ({kept} chunks kept, {recopied} re-copied: changed since)" if resumed else ""
                progress.say(f"{spec.name}: {checksum.count} rows{note}")
            elif resumed and recopied:
                log.info("%s: %d chunks re-copied (changed on the source since)", spec.name, recopied)
        progress.bar.finish()
        source.close()  # the snapshot is no longer needed: the verification reads DEST
        for spec, columns, checksum in results:
            _verify(spec, columns, destination, checksum)
        if isinstance(destination, SqliteDestination) and destination.orphans():
            raise CommandError(
                f"{destination.description}: rows whose parent is missing (PRAGMA foreign_key_check)"
            )
        where = destination.finish()
    finally:
        source.close()
        destination.close()
    elapsed = time.monotonic() - started
    rows = sum(c.count for _, _, c in results)
    skipped = ", ".join(NOT_MIGRATED)
    rate = rows / max(elapsed, 1e-6)
    print(
        f"migrated {source.description} into {where} at the source's {point},"
        f" in {elapsed:.1f} s ({rate:.0f} rows/s)"
    )
    for spec, _, checksum in results:
        print(f"  {spec.name:<20} {checksum.count:>10} rows  checksum {checksum.hex}  (equal on both sides)")
    print(f"  not copied: {skipped} (their own to each database)")
    return 0


COMMAND = Command(
    name="migrate",
    description="Copy the records of SRC into DEST, one an SQLite file and the other a postgresql:// URL: "
    "workflows, tasks, task log lines, audit events, instances and dead letters (not the writer lease, "
    "counters or prune jobs, which belong to each database's own writer). SRC is read in one snapshot "
    "while its writer keeps committing, and the report says at which of its commits. DEST must hold no "
    "records: a new SQLite file (built beside DEST and given its name only when verified), or a "
    "PostgreSQL database no writer serves (the writer's lock is held meanwhile). Interrupted, run it "
    "again: it carries on, re-copying what changed on SRC since, and the result is one snapshot. At the "
    "end every table's row count and checksum are compared on both sides. A progress bar is drawn on "
    "stderr at a terminal; otherwise a line per table.",
    examples=(
        "see-persistence migrate ~/.s_e_e/workflows.db postgresql://see@db.example/see",
        "see-persistence migrate postgresql://see@db.example/see ~/backups/workflows.db",
    ),
    configure=configure,
    run=run,
    takes_db=False,
)
