"""CURVE keys for the TCP transport: the writer's key pair, this user's client key pair, and
the allow-list of client public keys the writer accepts.

They live in one owner-only directory per user, `~/.s_e_e/keys` ($SEE_PERSISTENCE_KEYS_DIR
overrides it), and not beside the sockets: /run/user/<uid> is emptied at logout and /tmp by
cleaners, while a writer's public key is handed to other machines and must outlive both.
One directory per user (not per database) because the owner of every database of this user
is the same person: a key this user allowed may reach any of their writers.

    writer.key, writer.key_secret   the writer's pair (ZeroMQ certificate format, zmq.auth)
    client.key, client.key_secret   this user's client pair
    allowed/<hex of key>.key        one public certificate per allowed client key

Zero configuration on one machine: each pair is created on first use, and the client pair
is put on the allow-list of the same directory when it is created, so a writer and a client
of one user on one machine accept each other at once. A client on another machine prints
its key (`see-persistence keys show`), and the writer's owner allows it
(`see-persistence keys allow KEY`). One file per allowed key makes allow and revoke a single
create or unlink: no two commands rewrite one list at once.

Secret files are made 0600 in a 0700 directory, and refused when they are not (on POSIX
systems, where modes and owners exist): like ssh, a secret that others could read is no secret.
"""

from __future__ import annotations

import binascii
import datetime
import logging
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from .locations import default_directory
from .protocol.errors import CallerError

log = logging.getLogger("see_persistence.keys")

KEYS_DIR_ENV_VAR = "SEE_PERSISTENCE_KEYS_DIR"
KEYS_SUBDIRECTORY = "keys"
ALLOWED_SUBDIRECTORY = "allowed"
WRITER_NAME = "writer"
CLIENT_NAME = "client"
Z85_KEY_CHARS = 40  # 32 bytes in Z85
KEY_BYTES = 32

_POSIX_OWNERSHIP = hasattr(os, "getuid")
# A listing of the allow-list is kept only once the directory is older than this: 2 s covers
# the coarsest filesystem timestamps (FAT, some NFS), within which a revoke may not move mtime.
_RACY_STAMP_NS = 2_000_000_000


class InvalidKey(CallerError):
    """A key given by the caller is not a CURVE public key (40 characters of Z85)."""


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves in Z85 text (40 characters each)."""

    public: str
    secret: str


def keys_directory() -> Path:
    """Where this user's keys are: $SEE_PERSISTENCE_KEYS_DIR, else ~/.s_e_e/keys."""
    override = os.environ.get(KEYS_DIR_ENV_VAR)
    if override:
        return Path(os.path.abspath(os.path.expanduser(override)))
    return default_directory() / KEYS_SUBDIRECTORY


def parse_public_key(text: str) -> str:
    """The Z85 public key in `text` (surrounding spaces ignored); raises InvalidKey if it is none."""
    key = text.strip()
    if len(key) != Z85_KEY_CHARS:
        raise InvalidKey(f"not a CURVE public key (40 characters of Z85): {key!r}")
    try:
        raw = zmq.utils.z85.decode(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError) as exc:
        raise InvalidKey(f"not a CURVE public key (40 characters of Z85): {key!r}") from exc
    if len(raw) != KEY_BYTES:
        raise InvalidKey(f"not a CURVE public key (40 characters of Z85): {key!r}")
    return key


def key_bytes(key: str) -> bytes:
    """The 32 raw bytes of a Z85 public key (what a ZAP request carries)."""
    return bytes(zmq.utils.z85.decode(parse_public_key(key).encode("ascii")))


def _file_problem(path: Path, info: os.stat_result, *, secret: bool) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if not _POSIX_OWNERSHIP:
        return None
    if info.st_uid != os.getuid():
        return f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})"
    if info.st_mode & (0o077 if secret else 0o022):
        return (
            f"{path} has mode {stat.S_IMODE(info.st_mode):o}: others could "
            f"{'read' if secret else 'change'} it; run 'chmod 600 {path}' or remove it"
        )
    return None


def ensure_key_directory(directory: Path) -> None:
    """Create `directory` (and its parents) owner-only, or check that an existing one is ours and closed.

    Raises PermissionError saying why when it belongs to someone else, is a symlink, or
    others can enter it: whoever can write there can add themselves to the allow-list.
    """
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    problem = _directory_problem(directory, os.lstat(directory))
    if problem is not None:
        raise PermissionError(problem)


def _directory_problem(directory: Path, info: os.stat_result) -> str | None:
    """Why `directory` (lstat as `info`) is no safe place for keys, or None."""
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory; refusing to keep keys there"
    if _POSIX_OWNERSHIP:
        if info.st_uid != os.getuid():
            return (
                f"key directory {directory} belongs to uid {info.st_uid},"
                f" not to this user (uid {os.getuid()})"
            )
        if info.st_mode & 0o077:
            return (
                f"key directory {directory} has mode {stat.S_IMODE(info.st_mode):o}: others could reach"
                f" the keys; run 'chmod 700 {directory}'"
            )
    return None


def _certificate_text(public: str, secret: str | None, name: str) -> str:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ZeroMQ CURVE {kind} Certificate, written by see-persistence on"
        f" {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "",
        "metadata",
        f"    name = {name}",
        "curve",
        f'    public-key = "{public}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret}"')
    return "\n".join(lines) + "\n"


def _write_new_file(path: Path, text: str) -> bool:
    """Create `path` owner-only holding `text`, whole or not at all; False if it exists already.

    Written to a temporary file first and then linked to its name: a process reading the
    name never sees half a key, and of two processes creating it at once one wins, the other
    reads what the winner wrote.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


class KeyStore:
    """The key directory of one user: key pairs and the allow-list (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else keys_directory()
        self.allowed_directory = self.directory / ALLOWED_SUBDIRECTORY
        self._allowed_cache: tuple[tuple[int, int, int], dict[bytes, str]] | None = None

    def ensure(self) -> None:
        """Create the directory and its allow-list directory owner-only, or check them."""
        ensure_key_directory(self.directory)
        ensure_key_directory(self.allowed_directory)

    # -- key pairs -----------------------------------------------------------------------------

    def _pair_path(self, name: str) -> Path:
        return self.directory / f"{name}.key_secret"

    def load_pair(self, name: str) -> KeyPair | None:
        """The pair `name` (writer, client), or None if it does not exist; raises if it is not safe."""
        path = self._pair_path(name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        problem = _file_problem(path, info, secret=True)
        if problem is not None:
            raise PermissionError(f"refusing the secret key: {problem}")
        public, secret = zmq.auth.load_certificate(path)
        if secret is None:
            raise ValueError(f"{path} holds no secret key")
        return KeyPair(public.decode("ascii"), secret.decode("ascii"))

    def pair(self, name: str) -> KeyPair:
        """The pair `name`, created on first use (owner-only); the client pair is allowed at creation."""
        self.ensure()
        existing = self.load_pair(name)
        if existing is not None:
            return existing
        public_b, secret_b = zmq.curve_keypair()
        public, secret = public_b.decode("ascii"), secret_b.decode("ascii")
        # The client key is allowed before its secret exists under its name: a process killed in
        # between leaves at worst an allowed key nobody holds, never a key that is refused forever.
        allowed_first = name == CLIENT_NAME and self.allow(
            public, label=f"this user's client key, created in {self.directory}"
        )
        if _write_new_file(self._pair_path(name), _certificate_text(public, secret, name)):
            _write_new_file(self.directory / f"{name}.key", _certificate_text(public, None, name))
            log.info("created the %s key pair in %s (public key %s)", name, self.directory, public)
        elif allowed_first:
            self.revoke(public)  # another process created the pair first; this key is never used
        loaded = self.load_pair(name)  # ours, or the pair another process created first
        assert loaded is not None
        return loaded

    def writer_pair(self) -> KeyPair:
        """The writer's key pair (created on first use)."""
        return self.pair(WRITER_NAME)

    def client_pair(self) -> KeyPair:
        """This user's client key pair (created on first use, and then allowed here)."""
        return self.pair(CLIENT_NAME)

    # -- the allow-list --------------------------------------------------------------------------

    def _allowed_path(self, key: str) -> Path:
        return self.allowed_directory / f"{binascii.hexlify(key_bytes(key)).decode('ascii')}.key"

    def allow(self, key: str, label: str = "") -> bool:
        """Put a client public key on the allow-list; False if it was already there."""
        key = parse_public_key(key)
        self.ensure()
        added = _write_new_file(self._allowed_path(key), _certificate_text(key, None, label or "allowed"))
        if added:
            log.info("allowed client key %s", key)
        return added

    def revoke(self, key: str) -> bool:
        """Take a client public key off the allow-list; False if it was not on it."""
        path = self._allowed_path(parse_public_key(key))
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        log.info("revoked client key %s", key)
        return True

    def allowed(self) -> dict[bytes, str]:
        """Every allowed client key: raw 32 bytes -> its Z85 text. Unsafe files are skipped and logged.

        Read again only when the directory changed (a stat per call): the writer asks for every
        handshake, and `allow` or `revoke` takes effect with the next one.
        """
        try:
            info = os.lstat(self.allowed_directory)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("cannot read the allow-list %s: allowing no key: %s", self.allowed_directory, exc)
            return {}
        problem = _directory_problem(self.allowed_directory, info)
        if problem is not None:  # checked at every read: a chmod after start would let others in
            log.error("allowing no key: %s", problem)
            return {}
        stamp = (info.st_ino, info.st_mtime_ns, info.st_mode)
        if self._allowed_cache is not None and self._allowed_cache[0] == stamp:
            return self._allowed_cache[1]
        keys: dict[bytes, str] = {}
        for path in sorted(self.allowed_directory.glob("*.key")):
            try:
                problem = _file_problem(path, os.lstat(path), secret=False)
                if problem is not None:
                    log.error("ignoring an allowed key: %s", problem)
                    continue
                public, _secret = zmq.auth.load_certificate(path)
                text = parse_public_key(public.decode("ascii"))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.error("ignoring %s: %s", path, exc)
                continue
            keys[key_bytes(text)] = text
        # A revoke within the same mtime tick as this listing would leave the stamp unchanged:
        # like git's "racy" index, a listing younger than the filesystem's coarsest tick is not kept.
        if time.time_ns() - info.st_mtime_ns > _RACY_STAMP_NS:
            self._allowed_cache = (stamp, keys)
        else:
            self._allowed_cache = None
        return keys

    def is_allowed(self, raw_key: bytes) -> bool:
        """True if the 32-byte client key of a handshake is on the allow-list."""
        return raw_key in self.allowed()

    def labels(self) -> list[tuple[str, str]]:
        """(key, label) of every allowed key, for `see-persistence keys list`."""
        result = []
        for text in self.allowed().values():
            label = ""
            try:
                for line in self._allowed_path(text).read_text(encoding="utf-8").splitlines():
                    if line.strip().startswith("name ="):
                        label = line.split("=", 1)[1].strip()
            except OSError:
                pass
            result.append((text, label))
        return result


def public_key_from(argument: str) -> str:
    """A public key given as itself, or as a file holding it (a certificate or the bare key)."""
    candidate = Path(argument).expanduser()
    if len(argument.strip()) != Z85_KEY_CHARS and candidate.is_file():
        text = candidate.read_text(encoding="utf-8", errors="replace")
        if "public-key" in text:
            public, _secret = zmq.auth.load_certificate(candidate)
            return parse_public_key(public.decode("ascii"))
        return parse_public_key(text)
    return parse_public_key(argument)
