"""PostgreSQL's own client programs (pg_dump, pg_restore), found where the server's binaries are.

Looked for as the test suite looks for the server: $SEE_PERSISTENCE_PG_BINDIR, then
`pg_config --bindir`, then /usr/lib/postgresql/<newest>/bin (Debian and Ubuntu put none of
them on PATH), then PATH. The password of a URL never reaches a command line, where `ps`
shows it: it goes to the program through $PGPASSWORD.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..backends import DatabaseURL

BINDIR_ENV_VAR = "SEE_PERSISTENCE_PG_BINDIR"
PG_CONFIG_TIMEOUT_S = 30


def server_bindirs() -> list[Path]:
    """Where the PostgreSQL server's programs may be, most specific first: $SEE_PERSISTENCE_PG_BINDIR,
    `pg_config --bindir`, then /usr/lib/postgresql/<newest>/bin."""
    candidates: list[Path] = []
    override = os.environ.get(BINDIR_ENV_VAR)
    if override:
        candidates.append(Path(override))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=PG_CONFIG_TIMEOUT_S,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))

    def version_of(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return int(match.group(1)) if match else -1

    candidates.extend(
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_of, reverse=True)
    )
    return candidates


def find_program(name: str) -> Path | None:
    """The first `name` (pg_dump, pg_restore) in the server's binary directories, else on PATH."""
    for bindir in server_bindirs():
        candidate = bindir / name
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def split_password(database: DatabaseURL) -> tuple[str, str | None]:
    """The URL without its password (user:password@ or ?password=), and the password."""
    parts = urlsplit(database.url)
    password = unquote(parts.password) if parts.password is not None else None
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}@{host}")
    if parts.query:
        query = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name.lower() == "password":
                password = value
            else:
                query.append((name, value))
        parts = parts._replace(query=urlencode(query, safe="/:"))
    return urlunsplit(parts), password


def shown_command(argv: list[str]) -> str:
    """A command line to show a user (the password never is in it)."""
    return " ".join(shlex.quote(arg) for arg in argv)


def run_program(argv: list[str], database: DatabaseURL) -> subprocess.CompletedProcess[str]:
    """Run a client program for `database`, its password (if any) in $PGPASSWORD; output captured."""
    _, password = split_password(database)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
