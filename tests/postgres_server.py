"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary directory.

The cluster listens on a unix socket in that directory and nowhere else (`listen_addresses`
is empty: no TCP port, so nothing on the machine's network sees it), trusts only whoever
can enter the directory (owner-only), and trades durability for speed (fsync and
synchronous_commit off: a test cluster that loses power is simply made again).

initdb and the server refuse to run as root, so under root the cluster belongs to the
`postgres` system user: the directory is handed to it and every server command runs through
`runuser -u postgres --` (or `su postgres -c` where runuser is missing). Root can still
connect through the socket, since the directory's permissions do not stop root.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from see_persistence.commands.pg_tools import server_bindirs

MIN_SERVER_MAJOR = 15
SERVER_USER = "postgres"  # the system account initdb runs as when the tests run as root
SUPERUSER = "postgres"  # the cluster's bootstrap role, whoever owns the files
START_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 120


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says why, in one line."""


@dataclass(frozen=True)
class ServerBinaries:
    """The directory holding initdb and pg_ctl, and the server's major version."""

    bindir: Path
    major: int

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bindir / "pg_ctl"


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def candidate_bindirs() -> list[Path]:
    """Where initdb and pg_ctl may be, most specific first: $SEE_PERSISTENCE_PG_BINDIR,
    `pg_config --bindir`, /usr/lib/postgresql/<newest>/bin, then PATH."""
    # The commands look for pg_dump and pg_restore the same way: the server's tools.
    candidates = server_bindirs()
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(os.path.realpath(pg_ctl)).parent)
    return candidates


def find_binaries() -> ServerBinaries:
    """The first candidate directory with a server of MIN_SERVER_MAJOR or newer.

    Raises PostgresUnavailable saying what was looked at when there is none.
    """
    looked: list[str] = []
    too_old: list[str] = []
    for bindir in candidate_bindirs():
        looked.append(str(bindir))
        if not _has_server(bindir):
            continue
        try:
            out = subprocess.run(
                [str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if match is None:
            continue
        major = int(match.group(1))
        if major < MIN_SERVER_MAJOR:
            too_old.append(f"{bindir} ({major})")
            continue
        return ServerBinaries(bindir, major)
    if too_old:
        raise PostgresUnavailable(
            f"PostgreSQL {MIN_SERVER_MAJOR} or newer is needed; found only {', '.join(too_old)}"
        )
    where = ", ".join(dict.fromkeys(looked)) or "pg_config, /usr/lib/postgresql/*/bin, PATH"
    raise PostgresUnavailable(f"no PostgreSQL server (initdb, pg_ctl, postgres) in {where}")


def _as_server_user(argv: list[str]) -> list[str]:
    """`argv` run as the cluster's owner: unchanged, or through runuser/su under root."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SERVER_USER, "--", *argv]
    su = shutil.which("su")
    if su:
        return [su, SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]
    raise PostgresUnavailable("running as root, and neither runuser nor su is there to become postgres")


class PostgresServer:
    """One cluster: `start()` makes and starts it, `stop()` stops it and removes its files.

    `url(dbname)` is a libpq URL that reaches it through its socket directory.
    """

    def __init__(self, binaries: ServerBinaries) -> None:
        self.binaries = binaries
        # Short and directly under the temporary root: a unix socket path has ~107 bytes, and
        # under root the postgres user must be able to reach it (pytest's tmp_path is root's).
        self.root = Path(tempfile.mkdtemp(prefix="see-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root
        self.log_path = self.root / "server.log"
        self.port = 5432  # only names the socket file (.s.PGSQL.5432): no TCP is opened
        self.started = False

    def _run(self, argv: list[str], what: str) -> None:
        try:
            result = subprocess.run(
                _as_server_user(argv),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                cwd=self.root,  # the server user may not be allowed into the caller's directory
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"{what} failed: {exc}") from exc
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            log = (
                self.log_path.read_text(errors="replace").strip().splitlines()
                if self.log_path.exists()
                else []
            )
            last = (detail[-1:] or log[-1:] or ["(no output)"])[0]
            raise PostgresUnavailable(f"{what} exited {result.returncode}: {last}")

    def start(self) -> None:
        """initdb, configure, pg_ctl start; raise PostgresUnavailable with the reason on failure."""
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {SERVER_USER!r} user to own the cluster"
                ) from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            [
                str(self.binaries.initdb),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",  # only the directory's owner (and root) can reach the socket
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "port": str(self.port),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# see-persistence tests\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._run(
            [
                str(self.binaries.pg_ctl),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            "pg_ctl start",
        )
        self.started = True

    def restart(self) -> None:
        """pg_ctl restart -m fast: every open session ends, the server comes back with its data."""
        self._run(
            [
                str(self.binaries.pg_ctl),
                "restart",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            "pg_ctl restart",
        )

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended) and remove the cluster's files."""
        try:
            if self.started:
                self._run(
                    [str(self.binaries.pg_ctl), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"],
                    "pg_ctl stop",
                )
                self.started = False
        finally:
            # With its data directory gone a server that failed to stop exits on its own at its
            # next lock-file check, rather than living on after the tests.
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        """A postgresql:// URL for `dbname` on this server, through its socket directory."""
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{SUPERUSER}@/{quote(dbname)}?host={host}&port={self.port}"

    def log(self) -> str:
        """What the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
