"""Where things are: the database path, and the writer's endpoints derived from it alone.

The endpoints are ipc:// sockets named by a hash of the database's real path, inside a
directory only the owner can enter, so a Client can connect before any writer exists and
every process that names the same file meets at the same socket.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

DB_ENV_VAR = "SEE_PERSISTENCE_DB"
RUNTIME_DIR_ENV_VAR = "SEE_PERSISTENCE_RUNTIME_DIR"
DEFAULT_DB_PATH = Path("~/.s_e_e/workflows.db")
MAX_IPC_PATH_BYTES = 107  # sun_path is 108 bytes on Linux, with the trailing NUL


def resolve_db_path(db_path: str | os.PathLike[str] | None = None) -> Path:
    """The absolute database path: the argument, else $SEE_PERSISTENCE_DB, else the default."""
    if db_path is None or str(db_path) == "":
        db_path = os.environ.get(DB_ENV_VAR) or DEFAULT_DB_PATH
    return Path(os.path.abspath(Path(db_path).expanduser()))


def default_directory() -> Path:
    """The directory of the built-in default database path (~/.s_e_e), absolute.

    The only directory the writer creates on its own: a path anywhere else whose directory
    is missing is more likely mistyped than new. $SEE_PERSISTENCE_DB does not move it.
    """
    return resolve_db_path(DEFAULT_DB_PATH).parent


def runtime_dir() -> Path:
    """The owner-only directory that holds the writer's sockets.

    Not $XDG_RUNTIME_DIR or $TMPDIR: a writer under a supervisor and a GUI in a desktop
    session may see different environments, and the endpoint must follow from the database
    path alone. $SEE_PERSISTENCE_RUNTIME_DIR overrides it, for both sides alike.
    """
    override = os.environ.get(RUNTIME_DIR_ENV_VAR)
    if override:
        return Path(os.path.abspath(override))
    return Path(f"/tmp/see-persistence-{os.getuid()}")


@dataclass(frozen=True)
class Endpoints:
    """The writer's two sockets: PULL for operations, PUB for commit notices."""

    pull: str
    pub: str
    directory: Path


def endpoints_for(db_path: Path) -> Endpoints:
    """Derive the writer's endpoints from the database path (no I/O)."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(db_path))).hexdigest()[:20]
    directory = runtime_dir()
    pull = f"ipc://{directory}/{digest}.pull"
    pub = f"ipc://{directory}/{digest}.pub"
    if len(os.fsencode(pull)) - len("ipc://") > MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"socket directory {directory} is too long for an ipc path "
            f"(at most {MAX_IPC_PATH_BYTES} bytes); set {RUNTIME_DIR_ENV_VAR} to a shorter one"
        )
    return Endpoints(pull=pull, pub=pub, directory=directory)


def ensure_private_directory(directory: Path) -> None:
    """Create `directory` owner-only, or check that an existing one is ours and closed to others.

    Raises PermissionError, saying why, when the directory belongs to another user or
    others can write to or enter it: anyone who can reach the socket can send operations.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{directory} exists and is not a directory")
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"socket directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.getuid()}); refusing to put the writer's socket there"
        )
    if info.st_mode & 0o077:
        raise PermissionError(
            f"socket directory {directory} has mode {stat.S_IMODE(info.st_mode):o}: others "
            f"could reach the writer's socket; run 'chmod 700 {directory}' or remove it"
        )
