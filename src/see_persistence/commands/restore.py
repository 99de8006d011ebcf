"""`see-persistence restore SRC`: put a backup in the database's place, keeping the file it replaces."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocol import schema
from .base import EXIT_LEASE_HELD, Command, CommandError
from .common import describe_sqlite_error, is_server, open_database, schema_version, sidecar, table_names
from .copying import (
    copy_online,
    create_private_file,
    fsync_path,
    integrity_problems,
    no_leftover_sidecars,
    remove_with_sidecars,
)
from .progress import ProgressBar

if TYPE_CHECKING:
    from ..backends import DatabaseURL

log = logging.getLogger("see_persistence.cli.restore")

# The old file's -wal may hold committed transactions not yet checkpointed: it moves with the
# replaced file (which then opens whole). Its -shm is only an index of that WAL and is removed.
_MOVED_SIDECARS = ("-wal", "-journal")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the restore command's arguments."""
    parser.add_argument("source", metavar="SRC", help="the backup to restore (a see-persistence database)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the file at --db even if it is not a see-persistence database (e.g. unreadable)",
    )


def _describe_source(src: Path) -> str:
    """Check SRC (integrity and this layer's schema); a one-line description of it."""
    with no_leftover_sidecars(src):
        reader = open_database(src)  # exists, is SQLite, has the three S_E_E tables
        try:
            tables = table_names(reader)
            if "schema_version" not in tables:
                raise CommandError(f"{src} has no schema_version table; it is not a see-persistence database")
            version = schema_version(reader, tables)
            try:
                problems = integrity_problems(src)
            except sqlite3.DatabaseError as exc:  # too damaged for the check to finish
                problems = [describe_sqlite_error(exc)]
            if problems:
                raise CommandError(f"{src} fails PRAGMA integrity_check: {problems[0]}")
            rows = reader.count_rows()
        except sqlite3.DatabaseError as exc:
            raise CommandError(f"{src} is damaged: {describe_sqlite_error(exc)}") from None
        finally:
            reader.close()
    note = ""
    if version is not None and version > schema.SCHEMA_VERSION:
        note = f" (newer than this code's {schema.SCHEMA_VERSION}; schema changes are additive)"
    counts = ", ".join(f"{name} {count}" for name, count in rows.items())
    return f"schema version {version}{note}; {counts}"


def _refuse_if_writer_alive(db: Path) -> None:
    """Raise (exit 3) if a live writer holds the lease on `db`; warn about running GUIs."""
    reader = open_database(db)
    try:
        writer = reader.get_writer_status()
        live = len(reader.get_active_instances()) if "instances" in table_names(reader) else 0
    finally:
        reader.close()
    if writer is not None and writer.alive:
        raise CommandError(
            f"a live writer (pid {writer.pid} on {writer.host}) holds the lease on {db};"
            " stop it before restoring",
            EXIT_LEASE_HELD,
        )
    if live:
        log.warning(
            "%d GUI instances are running; they keep reading the replaced file until they reopen", live
        )


def _check_target(db: Path, force: bool) -> None:
    """Refuse a target with a live writer (exit 3), or one that is not ours unless forced."""
    if not db.exists():
        if not db.parent.is_dir():
            raise CommandError(f"directory {db.parent} does not exist")
        return
    try:
        _refuse_if_writer_alive(db)
    except CommandError as exc:
        if exc.code == EXIT_LEASE_HELD:
            raise
        # Not readable as ours: a mistyped --db, or the damaged file the restore is for.
        if not force:
            raise CommandError(f"{exc.message}; refusing to replace it (--force does)") from None
        log.warning("replacing %s although it is not readable as ours: %s", db, exc.message)


def _replaced_name(db: Path) -> Path:
    """`<db>.replaced-<UTC time>`, with a counter if a restore in the same second made one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = db.with_name(f"{db.name}.replaced-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = db.with_name(f"{db.name}.replaced-{stamp}-{n}")
    return candidate


def _move_aside(db: Path, replaced: Path) -> None:
    """Move the database and its -wal to `replaced`; drop its -shm."""
    if db.exists():
        os.rename(db, replaced)
    for suffix in _MOVED_SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            os.rename(sidecar(db, suffix), sidecar(replaced, suffix))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar(db, "-shm"))


def _move_back(db: Path, replaced: Path, placed: bool) -> None:
    """Undo _move_aside after a failure: the old file (and its -wal) back at `db`.

    Deletes nothing but the restored main file (if `placed`): whatever else is at `db` may
    be the old file's, and is left alone.
    """
    if placed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(db)
    if replaced.exists() and not db.exists():
        os.rename(replaced, db)
    for suffix in _MOVED_SIDECARS:
        if sidecar(replaced, suffix).exists() and not sidecar(db, suffix).exists():
            os.rename(sidecar(replaced, suffix), sidecar(db, suffix))


def _last_commit_seq(db: Path) -> int:
    """The commit number in `db`'s lease row (0: no file, no row, or written before commit numbers)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            row = conn.execute("SELECT commit_seq FROM writer_lease WHERE id = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def _carry_commit_numbers(staged: Path, old_seq: int) -> None:
    """Number the restored file's commits on past both files' (the change feed's numbers only grow).

    Its feed id is cleared: the next writer draws a new one, and every watcher resyncs (it
    also sees the file replaced).
    """
    conn = sqlite3.connect(staged, isolation_level=None)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(writer_lease)")}
        if not columns:
            return  # no lease table: the writer that upgrades the file starts numbering it
        conn.execute("BEGIN IMMEDIATE")
        for table, column, declaration in schema.column_additions(0):
            if table == "writer_lease" and column in ("commit_seq", "feed_id") and column not in columns:
                conn.execute(f"ALTER TABLE writer_lease ADD COLUMN {column} {declaration}")
        conn.execute(
            "UPDATE writer_lease SET commit_seq = MAX(COALESCE(commit_seq, 0), ?) + 1, feed_id = NULL"
            " WHERE id = 1",
            (old_seq,),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection: its WAL is checkpointed into the file and removed


def _verify_restored(db: Path) -> dict[str, int]:
    """Read the restored file as a Reader would; its row counts."""
    reader = open_database(db)
    try:
        return reader.count_rows()
    finally:
        reader.close()


def _writer_started_on(path: Path) -> int | None:
    """The pid of a live writer on `path`, if one started there while we were working."""
    with no_leftover_sidecars(path):
        try:
            reader = open_database(path)
        except CommandError:
            return None
        try:
            writer = reader.get_writer_status()
        except sqlite3.DatabaseError:
            return None
        finally:
            reader.close()
    return writer.pid if writer is not None and writer.alive else None


def _restore_server(database: DatabaseURL, args: argparse.Namespace) -> int:
    """pg_restore of a pg_dump file into `database`, in one transaction: all of it or nothing.

    The writer's session advisory lock is held meanwhile: a live writer refuses the restore
    (exit 3), and no writer can start until it is done.
    """
    from ..writer.pg_storage import WRITER_LOCK_KEY
    from .pg_session import connect
    from .pg_tools import find_program, run_program, shown_command, split_password

    src = Path(os.path.abspath(Path(args.source).expanduser()))
    if not src.is_file():
        raise CommandError(f"no backup at {src}")
    url, _ = split_password(database)
    pg_restore = find_program("pg_restore")
    argv = [
        str(pg_restore or "pg_restore"),
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        f"--dbname={url}",
        str(src),
    ]
    if pg_restore is None:
        raise CommandError(
            f"restore into {database} needs pg_restore, which is not installed here (PostgreSQL's"
            f" client programs); install it, or stop the writer and run: {shown_command(argv)}"
        )
    guard = connect(database, read_only=False, purpose="restore")
    try:
        guard.autocommit = True
        held = guard.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,)).fetchone()
        if not (held and held[0]):
            raise CommandError(
                f"a live writer holds the lease on {database}; stop it before restoring", EXIT_LEASE_HELD
            )
        done = run_program(argv, database)
    finally:
        guard.close()  # the lock goes with the session
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise CommandError(f"pg_restore failed and was rolled back, {database} is as it was: {why}")
    reader = open_database(database)
    try:
        counts = ", ".join(f"{name} {count}" for name, count in reader.count_rows().items())
    finally:
        reader.close()
    print(f"restored {src} into {database} with pg_restore (one transaction): {counts}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Restore SRC in place of the database, keeping the old file as <db>.replaced-<time>."""
    if is_server(args.db):
        return _restore_server(args.db, args)
    db = Path(args.db)
    src = Path(os.path.abspath(Path(args.source).expanduser()))
    if not src.exists():
        raise CommandError(f"no backup at {src}")
    if db.exists() and os.path.samefile(src, db):
        raise CommandError(f"{src} is the database itself")
    description = _describe_source(src)
    _check_target(db, args.force)
    staged = db.with_name(f".{db.name}.restoring-{os.getpid()}")
    remove_with_sidecars(staged)
    bar = ProgressBar("restore")
    try:
        create_private_file(staged)
        with no_leftover_sidecars(src):
            copy_online(src, staged, progress=bar)
        bar.finish()
        problems = integrity_problems(staged)
        if problems:
            raise CommandError(f"the copy of {src} fails PRAGMA integrity_check: {problems[0]}")
        _carry_commit_numbers(staged, _last_commit_seq(db))
    except BaseException:
        bar.finish()
        remove_with_sidecars(staged)
        raise
    try:
        _check_target(db, args.force)  # again: a writer may have started during the copy
    except BaseException:
        remove_with_sidecars(staged)
        raise
    replaced = _replaced_name(db) if db.exists() else None
    placed = False
    try:
        if replaced is not None:
            _move_aside(db, replaced)
        else:
            remove_with_sidecars(db)  # stale -wal/-shm of a file that is gone
        os.rename(staged, db)
        placed = True
        fsync_path(db.parent)
        if replaced is not None and (pid := _writer_started_on(replaced)) is not None:
            raise CommandError(
                f"a writer (pid {pid}) started on {db} during the restore; stop it and retry", EXIT_LEASE_HELD
            )
        rows = _verify_restored(db)
    except BaseException as exc:
        # Only files this block moved or made are touched: the old one goes back in place.
        log.debug("restore failed, putting the old file back: %s", exc)
        if replaced is not None:
            _move_back(db, replaced, placed)
        elif placed:
            remove_with_sidecars(db)  # there was no old file: the new one just goes
        remove_with_sidecars(staged)
        if isinstance(exc, (sqlite3.DatabaseError, OSError)):
            reason = describe_sqlite_error(exc) if isinstance(exc, sqlite3.Error) else str(exc)
            raise CommandError(f"restore failed, the old file is back in place: {reason}") from None
        if isinstance(exc, CommandError):
            raise CommandError(f"{exc.message}; the old file is back in place", exc.code) from None
        raise
    print(f"restored {src} to {db}: {description}")
    if replaced is not None:
        print(f"the replaced file is kept as {replaced} (remove it once you are satisfied)")
    log.debug("restored %s to %s: %s", src, db, rows)
    return 0


COMMAND = Command(
    name="restore",
    description="Check SRC (PRAGMA integrity_check, the S_E_E tables, schema_version), copy it next to "
    "the database owner-only, and put it in the database's place. The file it replaces is kept as "
    "<db>.replaced-<UTC time> with its -wal; its -shm is removed. Refused with exit code 3 while a "
    "live writer holds the lease; if anything fails, the old file is put back. On PostgreSQL (--db "
    "postgresql://...) SRC is a pg_dump file (what backup makes there), restored by pg_restore --clean "
    "in one transaction while no writer may start; without pg_restore it prints the command to run.",
    examples=(
        "see-persistence restore ~/backups/workflows-2026-05-01.db",
        "see-persistence restore --db /srv/see/workflows.db /srv/backups/workflows.db",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
