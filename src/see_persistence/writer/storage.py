"""The writer's read-write connection: its files owner-only, WAL, pragmas, schema upgraded;
and, before any of that, whether the writer may take the file at all."""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import stat
from collections.abc import Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: SQLite locks the -shm there with LockFileEx, which this cannot probe
    fcntl = None  # type: ignore[assignment]
from contextlib import contextmanager
from pathlib import Path

from .. import locations
from ..database import BUSY_TIMEOUT_MS, open_read_only
from ..protocol import schema, timestamps
from ..protocol.errors import SeePersistenceError

log = logging.getLogger("see_persistence.writer")

JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smbfs", "smb3", "sshfs", "fuse.sshfs", "9p"})
OWNER_ONLY_MODE = 0o600
OTHERS_BITS = 0o077  # group and others: any of these lets someone else open the file
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
# SQLite's unix VFS holds a read lock on this byte of the -shm file for as long as a
# connection has it open ("dead man switch": UNIX_SHM_DMS in os_unix.c, (22 + 8) * 4 + 8).
SHM_DEAD_MAN_SWITCH_BYTE = 128


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path`, from /proc/mounts (None if unknown)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for fields in entries:
        if len(fields) < 3:
            continue
        mount_point = fields[1]
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fields[2])
    return best[1] if best else None


# Tables whose presence says a file already carries this layer: a writer created them, on
# a file that was new, the seed's, or adopted. Tables beside them are then a newer version's
# or were adopted with them, and are no reason to refuse the file again.
_LAYER_MARKER_TABLES = frozenset({"schema_version", "writer_lease", "instances", "dead_letters"})
_SQLITE_NOTADB = 26


class DatabaseRefused(SeePersistenceError):
    """The writer will not write to this file; the message names it and says why."""


def prepare_database_file(db_path: Path, *, adopt: bool = False) -> None:
    """Check, before anything is written, that the writer may make `db_path` its database.

    Creates a missing parent directory only when it is the built-in default one (~/.s_e_e):
    anywhere else a missing directory is more likely a mistyped path than a wish, and the
    writer would otherwise start a fresh, empty database there. Refuses a file that is not
    SQLite, and an SQLite file holding tables that are neither the seed's nor this layer's
    unless `adopt` (the writer's tables would land in someone else's database), and a file
    with more than one name (locations.HardLinkedDatabase). Removes a -wal and -shm left
    beside a missing or empty file, or refuses while a process still has them open. Every
    error names the path.
    """
    refuse_network_filesystem(db_path)
    directory = db_path.parent
    if not directory.is_dir():
        if directory.exists():
            raise NotADirectoryError(f"{directory} is not a directory: no database can be created in it")
        if directory != locations.default_directory():
            raise FileNotFoundError(
                f"directory {directory} does not exist: create it first, or check the path {db_path}"
                f" (the writer creates only {locations.default_directory()} on its own)"
            )
        try:
            directory.mkdir(mode=0o700)
        except OSError as exc:
            raise OSError(f"could not create the directory {directory}: {exc.strerror or exc}") from None
        log.info("created the directory %s", directory)
    if db_path.is_dir():
        raise IsADirectoryError(f"{db_path} is a directory, not a database file")
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates the -wal and -shm files beside the database.
        raise PermissionError(f"permission denied: the writer cannot create files in {directory}")
    locations.check_single_name(db_path)
    clear_orphaned_companions(db_path)
    if not db_path.exists():
        return
    if not os.access(db_path, os.R_OK | os.W_OK):
        raise PermissionError(f"permission denied: the writer cannot read and write {db_path}")
    if db_path.stat().st_size == 0:
        return  # an empty file, as create_private_file leaves it: SQLite makes it a new database
    tables = _table_names(db_path)
    if tables >= _LAYER_MARKER_TABLES:
        return
    foreign = schema.foreign_tables(tables)
    if not foreign:
        return
    names = ", ".join(foreign)
    tables_are = f"tables {names} are" if len(foreign) > 1 else f"table {names} is"
    if not adopt:
        raise DatabaseRefused(
            f"{db_path} is not a see-persistence database: its {tables_are} neither S_E_E's nor"
            " this layer's; the writer adds its tables to such a file only when told to adopt it"
            " (writer --adopt, or Writer(adopt=True))"
        )
    log.warning("adopting %s: its %s neither S_E_E's nor this layer's", db_path, tables_are)


def clear_orphaned_companions(db_path: Path) -> None:
    """Remove the -wal and -shm beside a missing or empty `db_path`; refuse while they are in use.

    They belong to a database that was deleted or moved while open (`rm wf.db`, `mv wf.db
    old.db`): SQLite would take them for the new file's, and a -shm some process still has
    open would be one index shared by two databases. Raises DatabaseRefused, naming them,
    while a process holds them; removes them (and says so) once none does.
    """
    try:
        if db_path.stat().st_size > 0:
            return
        state = "is empty"
    except FileNotFoundError:
        state = "does not exist"
    leftovers = [Path(f"{db_path}{suffix}") for suffix in ("-wal", "-shm")]
    leftovers = [path for path in leftovers if path.exists()]
    if not leftovers:
        return
    shm = Path(f"{db_path}-shm")
    if shm.exists() and _shm_in_use(shm):
        names = " and ".join(str(path) for path in leftovers)
        raise DatabaseRefused(
            f"{db_path} {state}, but {names} beside it are still open in another process: they"
            " belong to a database deleted or moved while in use, and a new one there would share"
            f" them; stop the processes that have it open (fuser {shlex.quote(str(shm))} names"
            " them), then start the writer again"
        )
    for path in leftovers:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        log.warning(
            "removed %s: %s %s, and it belonged to a database deleted or moved before", path, db_path, state
        )


def _shm_in_use(shm: Path) -> bool:
    """True if some other process has the -shm open through SQLite (holds its dead man switch).

    Call only before this process opens the database: closing any descriptor of a file drops
    every POSIX lock the process holds on it, SQLite's included. Where there are no POSIX locks
    to probe, the answer is "in use": leftovers that might be live are never removed.
    """
    if fcntl is None:
        return True
    try:
        fd = os.open(shm, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SHM_DEAD_MAN_SWITCH_BYTE)
        except OSError:  # EAGAIN / EACCES: another process holds it
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, SHM_DEAD_MAN_SWITCH_BYTE)
        return False
    finally:
        os.close(fd)


def _table_names(db_path: Path) -> set[str]:
    """The tables of an existing file, read through a read-only connection (writes nothing)."""
    try:
        conn = open_read_only(db_path)
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _is_not_a_database(exc):
            reason = f"{db_path} is not a see-persistence database: {_first_line(exc)}"
        else:
            reason = f"cannot read {db_path}: {_first_line(exc)}"
        raise DatabaseRefused(reason) from None


def _is_not_a_database(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_NOTADB)
    return "not a database" in str(exc)  # Python 3.10 has no sqlite_errorcode


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def refuse_network_filesystem(db_path: Path) -> None:
    """Raise OSError, naming the path, if `db_path` is on a network filesystem we can detect."""
    fs_type = filesystem_type(db_path)  # a path not there yet: the mount that would hold it
    if fs_type in NETWORK_FILESYSTEMS:
        raise OSError(
            f"{db_path} is on a {fs_type} filesystem: SQLite's WAL mode needs shared memory "
            "that network filesystems do not provide; put the database on a local disk"
        )


def create_private_file(db_path: Path) -> None:
    """Create the database file owner-only before SQLite does (its -wal and -shm copy its mode).

    The directory must exist: whether to create it is prepare_database_file's decision.
    """
    try:
        fd = os.open(db_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, OWNER_ONLY_MODE)
    except FileExistsError:
        return
    os.close(fd)


def companion_paths(db_path: Path) -> list[Path]:
    """The -wal, -shm and -journal paths SQLite uses beside `db_path`, whether they exist or not."""
    # SQLite resolves a symlinked database and puts its companions beside the real file.
    real = os.path.realpath(db_path)
    return [Path(real + suffix) for suffix in COMPANION_SUFFIXES]


def open_to_others(paths: Iterable[Path]) -> list[tuple[Path, os.stat_result]]:
    """Those of `paths` that exist with a mode letting group or others open them, with their stat."""
    found = []
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # a companion SQLite has not created, or has just removed
        if info.st_mode & OTHERS_BITS:
            found.append((path, info))
    return found


def make_owner_only(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """chmod 0600 those of `paths` others can open, log it; return (path, old mode) of each changed.

    Raises DatabaseRefused, naming the path and the reason, before changing anything when one
    of them belongs to another user (the writer changes the modes of its own files only, and
    never their owner), and when a chmod fails (what was changed before it is still logged).
    """
    if not hasattr(os, "geteuid"):
        return []  # Windows: no mode bits to fix; the file's ACL is what guards it
    exposed = open_to_others(paths)
    me = os.geteuid()
    for path, info in exposed:
        if info.st_uid != me:
            # Root could chmod it, but the mode of another user's file is theirs to decide.
            raise DatabaseRefused(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o} (others can open it) and belongs"
                f" to uid {info.st_uid}, not to this user (uid {me}): the writer changes the mode of"
                f" its own files only; run the writer as uid {info.st_uid}, or have that user run:"
                f" chmod 600 {shlex.quote(str(path))}"
            )
    changed: list[tuple[Path, int]] = []
    try:
        for path, info in exposed:
            try:
                os.chmod(path, OWNER_ONLY_MODE)
            except FileNotFoundError:
                continue  # removed since (SQLite deletes the -journal and, on close, the -wal)
            except OSError as exc:
                raise DatabaseRefused(
                    f"cannot make {path} owner-only (mode {stat.S_IMODE(info.st_mode):04o}, others"
                    f" can open it): chmod failed: {exc.strerror or exc}"
                ) from None
            changed.append((path, stat.S_IMODE(info.st_mode)))
    finally:
        if changed:
            what = ", ".join(f"{path} {old:04o} -> {OWNER_ONLY_MODE:04o}" for path, old in changed)
            log.warning("made the database files owner-only (others could open them): %s", what)
    return changed


def open_write_connection(db_path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open the database for writing: local disk only, its files owner-only, the layer's pragmas."""
    synchronous = synchronous.upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    refuse_network_filesystem(db_path)
    create_private_file(db_path)
    # A file the Rust core made has the umask's 0644, and so may its -wal and -shm: this layer
    # promises that only the owner can open the files. The main file first, before SQLite
    # creates any companion from its mode; the companions once the open has created them, or
    # found them. The directory is left as it is: one others may list but not write (0755, a
    # home subfolder) lets nobody else open a 0600 file, and it is the user's, not ours.
    companions = companion_paths(db_path)
    make_owner_only([db_path, *companions])
    conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OSError(f"could not put {db_path} in WAL mode (journal_mode is {mode})")
        make_owner_only(companions)
    except BaseException:
        conn.close()
        raise
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    return conn


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a deferred constraint, an I/O error) leaves the transaction
        # open, and every BEGIN after it would fail: end it here.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest version recorded in schema_version (0 for a file without the table)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _missing_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """This layer's added columns that a table of the file lacks (whatever its version says)."""
    missing: list[tuple[str, str, str]] = []
    present: dict[str, set[str]] = {}
    for table, column, declaration in schema.column_additions(0):
        if table not in present:
            present[table] = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if present[table] and column not in present[table]:
            missing.append((table, column, declaration))
    return missing


def _missing_indexes(conn: sqlite3.Connection) -> list[str]:
    """The statements creating this layer's indexes that the file lacks, on tables it has."""
    present = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [
        f"CREATE INDEX IF NOT EXISTS {index} ON {table}({', '.join(columns)})"
        for index, (table, columns) in schema.LAYER_INDEXES.items()
        if index not in present and table in tables
    ]


def upgrade_schema(conn: sqlite3.Connection, now_us: int) -> int:
    """Bring the file up to SCHEMA_VERSION in one transaction; return the version found.

    Looks first without a lock: a standby starting beside a busy writer must not compete
    for the write lock (and fail with "database is locked") when there is nothing to do.
    A column or index this layer adds is added wherever it is missing, even to a file whose
    version row says it is up to date (ALTER TABLE has no IF NOT EXISTS, so each one is
    looked up).
    """
    found = schema_version(conn)
    if found >= schema.SCHEMA_VERSION and not _missing_columns(conn) and not _missing_indexes(conn):
        return found
    with immediate_transaction(conn):
        found = schema_version(conn)
        if found < schema.SCHEMA_VERSION:
            # Indexes over a large file take seconds: others starting meanwhile wait for the lock.
            log.info(
                "upgrading the schema of the database from version %d to %d", found, schema.SCHEMA_VERSION
            )
        for statement in schema.upgrade_statements(found):
            conn.execute(statement)
        for table, column, declaration in _missing_columns(conn):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        for statement in _missing_indexes(conn):
            conn.execute(statement)
        if found < schema.SCHEMA_VERSION:
            conn.execute(
                schema.version_row_statement(), (schema.SCHEMA_VERSION, timestamps.format_us(now_us))
            )
    if found < schema.SCHEMA_VERSION:
        log.info("schema of the database upgraded from version %d to %d", found, schema.SCHEMA_VERSION)
    return found
