"""What a database argument names: an SQLite file path, or a PostgreSQL server by its URL.

The rule, the same for every API, `--db` and $SEE_PERSISTENCE_DB:

- A `str` that starts with a URL scheme and `://` is a URL. `postgresql://` and
  `postgres://` (libpq takes both) name a PostgreSQL database; any other scheme is refused,
  rather than taken for a relative file path it almost certainly is not meant to be (a file
  really named so can still be given as `./name`).
- Anything else, and every `os.PathLike`, is an SQLite file path.
- A path whose text starts `postgresql:/` is a URL that went through `pathlib.Path`, which
  folds `//` into `/`: refused with that explanation instead of becoming a file of that name.

Pure functions, no I/O but `backend_installed()`, which only asks the import system whether
the driver is there. Error messages never show a URL's password.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .protocol.errors import BackendUnavailable, CallerError

Backend = Literal["sqlite", "postgresql"]

POSTGRESQL_SCHEMES = frozenset({"postgresql", "postgres"})
IMPLEMENTED_BACKENDS: frozenset[Backend] = frozenset({"sqlite"})
"""The backends the commands that take a file only (demo) can use in this version."""
READER_AND_CLIENT_BACKENDS: frozenset[Backend] = frozenset({"sqlite", "postgresql"})
"""The backends the Reader and the Client can use in this version (a Client finds the writer
through the database's lease row, whichever backend holds it)."""
WRITER_BACKENDS: frozenset[Backend] = frozenset({"sqlite", "postgresql"})
"""The backends the writer (`Writer`, `see-persistence writer`) can use in this version."""

_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_PATHLIB_FOLDED_URL = re.compile(r"^(?:postgresql|postgres):/(?!/)", re.IGNORECASE)


@dataclass(frozen=True)
class DatabaseURL:
    """A database server named by URL; `str()` and `repr()` hide its password."""

    backend: Backend
    url: str

    def redacted(self) -> str:
        """The URL with its password, if any, replaced by ***."""
        return redact_url(self.url)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"DatabaseURL(backend={self.backend!r}, url={self.redacted()!r})"


def redact_url(url: str) -> str:
    """`url` with its password (user:password@, or libpq's ?password=) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="/:*"))
    return urlunsplit(parts)


def parse_database(value: str | os.PathLike[str]) -> DatabaseURL | None:
    """The server `value` names, or None when it is an SQLite file path.

    Raises CallerError for a URL of a scheme no backend has, and for a PostgreSQL URL that
    pathlib.Path folded into a path.
    """
    if isinstance(value, os.PathLike):
        text = os.fspath(value)
        if _PATHLIB_FOLDED_URL.match(text):
            raise CallerError(
                f"{text!r} looks like a postgresql:// URL that went through pathlib.Path, which folds"
                " '//' into '/': pass the URL as a str"
            )
        return None
    match = _URL.match(value)
    if match is None:
        return None
    scheme = match.group("scheme").lower()
    if scheme in POSTGRESQL_SCHEMES:
        return DatabaseURL("postgresql", value)
    raise CallerError(
        f"{redact_url(value)!r} is a {scheme}:// URL: a database is an SQLite file path or a"
        " postgresql:// URL (a file whose name looks like a URL can be given as ./NAME)"
    )


def backend_installed(backend: Backend) -> bool:
    """True if the driver `backend` needs can be imported (SQLite's always can)."""
    if backend == "sqlite":
        return True
    return importlib.util.find_spec("psycopg") is not None


def require_backend(
    database: DatabaseURL,
    implemented: frozenset[Backend] = IMPLEMENTED_BACKENDS,
    installed: bool | None = None,
) -> None:
    """Raise BackendUnavailable, saying what to do, unless `database` can be used here.

    `installed` defaults to backend_installed(); both it and `implemented` are parameters so
    that every message can be tested.
    """
    if database.backend not in implemented:
        raise BackendUnavailable(
            f"PostgreSQL support is not complete in this version: this part takes an SQLite file"
            f" path only (the Reader, the Client, the writer and the commands that read take a"
            f" URL), not {database.redacted()}"
        )
    if not (backend_installed(database.backend) if installed is None else installed):
        raise BackendUnavailable(
            f"{database.redacted()} needs PostgreSQL's driver, which is not installed:"
            " pip install 'see-persistence[postgresql]'"
        )
