"""Where things are: the database path, and the writer's endpoints derived from it alone.

A database is the file, not the spelling of its path: paths are resolved as the operating
system resolves them (realpath), and the endpoints are ipc:// sockets named after the
identity (device, inode) of the database's directory and the file's name, so that every
process naming the same file - through a symlink, `..`, or a bind mount - meets at the
same socket, and a Client can connect before any writer (or file) exists.

The sockets live in a directory only the owner can enter: /run/user/<uid>/see-persistence
where the system gives this user an owner-only /run/user/<uid>, else /tmp/see-persistence-<uid>
(a writer listens in both, see runtime_dirs()). Both sides check that directory before they
bind or connect: in a directory someone else controls, anyone could stand in for the writer.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shlex
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import backends
from .protocol.errors import BackendUnavailable, SeePersistenceError

DB_ENV_VAR = "SEE_PERSISTENCE_DB"
RUNTIME_DIR_ENV_VAR = "SEE_PERSISTENCE_RUNTIME_DIR"
DEFAULT_DB_PATH = Path("~/.s_e_e/workflows.db")
# sun_path is 108 bytes on Linux and 104 on macOS and the BSDs, each with its trailing NUL.
MAX_IPC_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
SESSION_RUNTIME_ROOT = Path("/run/user")  # systemd-logind's per-user runtime directories
SOCKET_SUBDIRECTORY = "see-persistence"


class HardLinkedDatabase(SeePersistenceError):
    """The database file has more than one name (hard link); using it could corrupt it."""


class FileIdentity(NamedTuple):
    """What makes a file the same file whatever it is called: its device and inode."""

    device: int
    inode: int


def resolve_db_path(db_path: str | os.PathLike[str] | None = None) -> Path:
    """The real absolute database path: the argument, else $SEE_PERSISTENCE_DB, else the default.

    A postgresql:// URL raises BackendUnavailable saying why (backends.py), and a URL of
    another scheme CallerError.

    Resolved as open() resolves it (symlinks first, then `..`), not by text: `DIR/link/../wf.db`
    is the `wf.db` beside the link's target, where open() would find it.
    """
    database = resolve_database(db_path, backends.IMPLEMENTED_BACKENDS)
    if isinstance(database, backends.DatabaseURL):  # only if IMPLEMENTED_BACKENDS has a server
        raise BackendUnavailable(f"{database}: this part of see-persistence takes a file path only")
    return database


def resolve_database(
    db_path: str | os.PathLike[str] | None, implemented: frozenset[backends.Backend]
) -> Path | backends.DatabaseURL:
    """The database the argument names (else $SEE_PERSISTENCE_DB, else the default): a resolved
    file path as resolve_db_path() gives it, or a server's URL if its backend is in `implemented`.

    A URL of a backend not in `implemented`, or whose driver is not installed, raises
    BackendUnavailable saying what to do; a URL of another scheme CallerError.
    """
    if db_path is None or str(db_path) == "":
        db_path = os.environ.get(DB_ENV_VAR) or DEFAULT_DB_PATH
    database_url = backends.parse_database(db_path)
    if database_url is not None:
        # Better than SQLite's "unable to open database file" for a file named postgresql:/host/db.
        backends.require_backend(database_url, implemented)
        return database_url
    return Path(os.path.realpath(Path(db_path).expanduser()))


def default_directory() -> Path:
    """The directory of the built-in default database path (~/.s_e_e), absolute.

    The only directory the writer creates on its own: a path anywhere else whose directory
    is missing is more likely mistyped than new. $SEE_PERSISTENCE_DB does not move it.
    """
    return resolve_db_path(DEFAULT_DB_PATH).parent


def file_identity(path: str | os.PathLike[str]) -> FileIdentity | None:
    """The (device, inode) the path leads to now, following symlinks; None if nothing is there."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileIdentity(info.st_dev, info.st_ino)


def check_single_name(db_path: str | os.PathLike[str]) -> None:
    """Raise HardLinkedDatabase if the file at `db_path` exists with more than one hard link.

    SQLite keeps the WAL and its index beside the name it was opened by (`hard.db-wal`,
    `wf.db-wal`), so two names of one WAL-mode database give two WALs for one file: writers
    and readers under different names miss each other's commits and can corrupt it. A
    missing file passes (whoever creates it creates one name).
    """
    try:
        links = os.stat(db_path).st_nlink
    except (FileNotFoundError, NotADirectoryError):
        return
    if links > 1:
        quoted = shlex.quote(str(db_path))
        raise HardLinkedDatabase(
            f"{db_path} has {links} names (hard links): SQLite keeps the WAL beside the name a"
            f" database is opened by, so two names of one file can corrupt it; refusing to use it."
            f" Remove the other names (find / -xdev -samefile {quoted} lists them), or copy the file"
            f" to a new name"
        )


# -- the socket directory ------------------------------------------------------------------------


def session_runtime_dir(root: Path = SESSION_RUNTIME_ROOT) -> Path | None:
    """`root`/<uid> (/run/user/<uid>) if it is a directory of this user's that only they can enter.

    Derived from the uid, not from $XDG_RUNTIME_DIR: a writer under a supervisor and a GUI in
    a desktop session see different environments, yet must name the same directory. The
    system creates it at login, owner-only, and removes it when the user's last session ends.
    """
    if not hasattr(os, "getuid"):
        return None  # not POSIX: no per-user runtime directory of this kind
    candidate = root / str(os.getuid())
    return candidate if private_directory_problem(candidate) is None else None


def runtime_dirs(session_root: Path = SESSION_RUNTIME_ROOT) -> list[Path]:
    """Every directory a writer listens in, the one clients connect through first.

    $SEE_PERSISTENCE_RUNTIME_DIR, if set, is the only one. Otherwise the see-persistence
    subdirectory of /run/user/<uid> while that exists (no other user can create or squat
    it), then /tmp/see-persistence-<uid>. A writer listens in both, because /run/user/<uid>
    comes and goes with the user's sessions: a writer a supervisor started before the login
    and a GUI started after it must still meet.
    """
    override = os.environ.get(RUNTIME_DIR_ENV_VAR)
    if override:
        return [Path(os.path.abspath(override))]
    directories = []
    session = session_runtime_dir(session_root)
    if session is not None:
        directories.append(session / SOCKET_SUBDIRECTORY)
    # /tmp itself, not $TMPDIR: a writer under a supervisor and a GUI in a desktop session
    # may see different environments, yet must meet in one directory.
    temporary = Path("/tmp") if os.name == "posix" else Path(tempfile.gettempdir())
    directories.append(temporary / f"see-persistence-{_user_tag()}")
    return directories


def _user_tag() -> str:
    """The uid where there is one; elsewhere (Windows, whose libzmq may lack ipc) the login name."""
    if hasattr(os, "getuid"):
        return str(os.getuid())
    try:
        name = getpass.getuser()
    except Exception:  # no login name in the environment and no password database to ask
        return "user"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "user"


def runtime_dir() -> Path:
    """The owner-only directory through which clients reach the writer's sockets (see runtime_dirs)."""
    return runtime_dirs()[0]


def private_directory_problem(directory: Path) -> str | None:
    """Why `directory` is no place for the writer's sockets, or None if it is ours and owner-only.

    Never creates anything. The directory itself is looked at, not what a symlink there
    points to: a symlink in /tmp is anyone's.
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return f"socket directory {directory} does not exist"
    except OSError as exc:
        return f"cannot look at the socket directory {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} exists and is not a directory; refusing to use it for the writer's socket"
    if not hasattr(os, "getuid"):
        return None  # no owner or mode bits to check: the file system's ACLs guard it
    if info.st_uid != os.getuid():
        return (
            f"socket directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.getuid()}); refusing to put the writer's socket there or to connect to one there"
        )
    if info.st_mode & 0o077:
        return (
            f"socket directory {directory} has mode {stat.S_IMODE(info.st_mode):o}: others "
            f"could reach the writer's socket; run 'chmod 700 {directory}' or remove it"
        )
    return None


def check_private_directory(directory: Path) -> None:
    """Raise PermissionError, saying why, unless `directory` is ours and owner-only; creates nothing.

    A missing directory raises FileNotFoundError: ensure_private_directory creates it.
    """
    problem = private_directory_problem(directory)
    if problem is not None:
        if not directory.exists() and not directory.is_symlink():
            raise FileNotFoundError(problem)
        raise PermissionError(problem)


def ensure_private_directory(directory: Path) -> None:
    """Create `directory` owner-only, or check that an existing one is ours and closed to others.

    Raises PermissionError, saying why, when the directory belongs to another user or
    others can write to or enter it: anyone who can reach the socket can send operations,
    and anyone who can bind there can pose as the writer. The Client calls it too (through
    checked_endpoints): the first process of this user to get there makes the directory
    its own before another user can.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    check_private_directory(directory)


# -- the endpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """The writer's two sockets: PULL for operations, PUB for commit notices."""

    pull: str
    pub: str
    directory: Path
    database: Path | None = None  # the database they were derived from: to derive them again

    def paths(self) -> tuple[Path, Path]:
        """The socket files of the PULL and PUB endpoints."""
        return Path(self.pull[len("ipc://") :]), Path(self.pub[len("ipc://") :])


def socket_name(db_path: Path) -> str:
    """The stem of the socket files of `db_path`: a hash of its directory's identity and its name.

    The directory, not the file: a Client may connect before the writer has created the
    file, and a file that does not exist has no inode. The directory's (device, inode) is
    the same through a bind mount or a symlinked directory; where the directory does not
    exist yet (the writer refuses such a path, but for the default one) the resolved path's
    text stands in. The default directory is created (owner-only) first, so that it never
    goes by its text before the writer creates it and by its inode after.
    """
    real = Path(os.path.realpath(db_path))
    if real.parent == default_directory():
        try:
            os.mkdir(real.parent, 0o700)
        except OSError:
            pass  # exists already, or cannot be made (then the writer will say why)
    try:
        info = os.stat(real.parent)
        key = b"dir\0%d\0%d\0" % (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None
    except OSError:
        key = None
    if key is None:
        key = b"path\0" + os.fsencode(real.parent) + b"\0"
    return hashlib.sha256(key + os.fsencode(real.name)).hexdigest()[:20]


def endpoints_for(db_path: Path, directory: Path | None = None) -> Endpoints:
    """The writer's endpoints for `db_path`, in `directory` (by default: where clients connect)."""
    if directory is None:
        directory = runtime_dir()
    name = socket_name(db_path)
    pull = f"ipc://{directory}/{name}.pull"
    pub = f"ipc://{directory}/{name}.pub"
    if len(os.fsencode(pull)) - len("ipc://") > MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"socket directory {directory} is too long for an ipc path "
            f"(at most {MAX_IPC_PATH_BYTES} bytes); set {RUNTIME_DIR_ENV_VAR} to a shorter one"
        )
    return Endpoints(pull=pull, pub=pub, directory=directory, database=Path(os.path.realpath(db_path)))


def check_socket_files(endpoints: Endpoints) -> None:
    """Raise PermissionError if a socket file of `endpoints` exists but is not a socket of ours.

    In a directory of ours nobody else can create one; this catches what the directory
    check cannot (root's files, a directory shared through the override).
    """
    if not hasattr(os, "getuid"):
        return  # no owner to compare (see private_directory_problem)
    me = os.getuid()
    for path in endpoints.paths():
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(info.st_mode):
            raise PermissionError(f"{path} exists and is not a socket; refusing to use it as the writer's")
        if info.st_uid != me:
            raise PermissionError(
                f"socket {path} belongs to uid {info.st_uid}, not to this user (uid {me}): someone"
                " else may be posing as the writer; refusing to use it"
            )


def checked_endpoints(db_path: Path) -> Endpoints:
    """The endpoints a Client connects to, once it is safe to: raises PermissionError saying why not.

    Creates the socket directory owner-only if it is missing (so that no other user can
    create it first), and refuses one that belongs to someone else or that others can
    enter, and socket files that are not this user's.
    """
    endpoints = endpoints_for(db_path)
    ensure_private_directory(endpoints.directory)
    check_socket_files(endpoints)
    return endpoints
