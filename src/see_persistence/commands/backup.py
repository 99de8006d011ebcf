"""`see-persistence backup DEST`: an online, consistent, owner-only copy of the database."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Command, CommandError, UsageError
from .common import human_bytes, is_server, open_database
from .copying import DEFAULT_STEP_PAGES, copy_online, create_private_file, fsync_path, remove_with_sidecars
from .progress import ProgressBar

if TYPE_CHECKING:
    from ..backends import DatabaseURL

log = logging.getLogger("see_persistence.cli.backup")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the backup command's arguments."""
    parser.add_argument("dest", metavar="DEST", help="the file to write (its directory must exist)")
    parser.add_argument("--force", action="store_true", help="replace DEST if it exists")
    parser.add_argument(
        "--step-pages",
        type=int,
        default=DEFAULT_STEP_PAGES,
        metavar="N",
        help=f"pages copied per backup step, -1 for all at once (default {DEFAULT_STEP_PAGES})",
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_dest(db: Path, dest: Path, force: bool) -> None:
    if dest.is_dir():
        raise CommandError(f"{dest} is a directory; name the backup file")
    if not dest.parent.is_dir():
        raise CommandError(f"directory {dest.parent} does not exist")
    if dest.exists() or dest.is_symlink():
        if _same_file(db, dest):
            raise CommandError(f"{dest} is the database itself")
        if not force:
            raise CommandError(f"{dest} exists; refusing to overwrite it (use --force)")


def _publish(partial: Path, dest: Path, force: bool) -> None:
    """Give the finished copy its name: atomically, and without overwriting unless forced."""
    if force:
        os.replace(partial, dest)
        return
    try:
        os.link(partial, dest)  # fails if DEST appeared meanwhile, where a rename would overwrite
    except FileExistsError:
        raise CommandError(
            f"{dest} appeared during the backup; refusing to overwrite it (use --force)"
        ) from None
    os.unlink(partial)


def _backup_server(database: DatabaseURL, args: argparse.Namespace) -> int:
    """pg_dump's custom format into a temporary name beside DEST, then DEST: whole or absent."""
    from .pg_tools import find_program, run_program, shown_command, split_password

    open_database(database).close()  # a server that refuses, or a database that is not ours
    dest = Path(os.path.abspath(Path(args.dest).expanduser()))
    if dest.is_dir():
        raise CommandError(f"{dest} is a directory; name the backup file")
    if not dest.parent.is_dir():
        raise CommandError(f"directory {dest.parent} does not exist")
    if (dest.exists() or dest.is_symlink()) and not args.force:
        raise CommandError(f"{dest} exists; refusing to overwrite it (use --force)")
    url, _ = split_password(database)
    pg_dump = find_program("pg_dump")
    argv = [str(pg_dump or "pg_dump"), "--format=custom", "--no-owner", f"--dbname={url}"]
    if pg_dump is None:
        raise CommandError(
            f"backup of {database} needs pg_dump, which is not installed here (PostgreSQL's client"
            f" programs); install it, or run: {shown_command([*argv, f'--file={dest}'])}"
        )
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    try:
        create_private_file(partial)  # owner-only before pg_dump writes a byte into it
        # pg_dump takes one snapshot (REPEATABLE READ) while the writer keeps committing.
        done = run_program([*argv, f"--file={partial}"], database)
        if done.returncode != 0:
            why = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
            raise CommandError(f"pg_dump failed, nothing written to {dest}: {why}")
        fsync_path(partial)
        _publish(partial, dest, args.force)
        fsync_path(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    size = dest.stat().st_size
    print(f"backed up {database} to {dest} with pg_dump (custom format), {human_bytes(size)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Copy the database to DEST while writers keep writing."""
    if is_server(args.db):
        return _backup_server(args.db, args)
    if args.step_pages == 0 or args.step_pages < -1:
        raise UsageError("--step-pages must be a positive number of pages (or -1 for all at once)")
    db = Path(args.db)
    open_database(db).close()
    dest = Path(os.path.abspath(Path(args.dest).expanduser()))
    _check_dest(db, dest, args.force)
    # Built under a temporary name beside DEST, so DEST is either absent or a whole copy.
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    remove_with_sidecars(partial)
    bar = ProgressBar("backup")
    try:
        create_private_file(partial)
        pages = copy_online(db, partial, step_pages=args.step_pages, progress=bar)
        bar.finish()
        _publish(partial, dest, args.force)
        fsync_path(dest.parent)
    except BaseException:
        bar.finish()
        with contextlib.suppress(OSError):
            remove_with_sidecars(partial)
        raise
    size = dest.stat().st_size
    log.debug("backed up %s to %s: %d pages, %d bytes", db, dest, pages, size)
    print(f"backed up {db} to {dest}: {pages} pages, {human_bytes(size)}")
    return 0


COMMAND = Command(
    name="backup",
    description="Copy the database to DEST with SQLite's online backup API from a read-only "
    "connection: one consistent snapshot, taken while the writer keeps committing. DEST is created "
    "readable and writable by the owner only, as one self-contained file (rollback-journal mode; a "
    "writer puts a restored copy back into WAL mode). A progress bar is drawn on stderr when it is "
    "a terminal. On PostgreSQL (--db postgresql://...) it runs pg_dump --format=custom (one snapshot "
    "too), found beside the server's programs or on PATH; without pg_dump it prints the command to run.",
    examples=(
        "see-persistence backup ~/backups/workflows-$(date +%F).db",
        "see-persistence backup --force /var/backups/see/workflows.db",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
