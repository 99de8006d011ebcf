"""One Client and one Reader per process, like logging.getLogger(): configured once, shared by every thread.

    import see_persistence
    see_persistence.configure("/data/workflows.db", spawn_writer=True)   # once, at start-up
    ...
    see_persistence.get_client().create_workflow("nightly")              # anywhere, any thread
    see_persistence.get_reader().list_workflows()

What a caller may rely on:
- get_client() and get_reader() return the same object on every call, from every thread,
  until close_defaults(). Each is made on the first call, under a lock, so two threads racing
  to the first call still get one object.
- Without configure(), they use what `Client()` and `Reader()` use: $SEE_PERSISTENCE_DB (read
  when the first handle is made) or ~/.s_e_e/workflows.db.
- configure() may be called again until the first handle is made (the last call wins). Once
  a handle exists, configure() with the same settings does nothing, and with other settings
  raises DefaultsInUse: the handles in use would not follow it.
- At interpreter exit the Client gets its bounded flush and is closed, as every open Client
  is (see Client). Do not close it yourself: call close_defaults(), after which configure()
  may be called again and get_client() makes a new Client.
- After fork, a child's get_client() returns the inherited Client, which records there as an
  instance of the child's own (the Client handles fork), and get_reader() the inherited
  Reader, which opens its own connections; the child's configure() follows the rule above.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from . import locations
from .backends import READER_AND_CLIENT_BACKENDS, DatabaseURL
from .client import Client
from .client.api import DEFAULT_BUFFER_LIMIT, DEFAULT_CLOSE_TIMEOUT_S
from .protocol.errors import DefaultsInUse
from .reader import Reader


@dataclasses.dataclass(frozen=True)
class _Settings:
    db_path: Path | DatabaseURL | None  # None: resolved when the first handle is made, as Client() does
    spawn_writer: bool = False
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    block_when_full: bool = False


_lock = threading.Lock()
_settings = _Settings(None)
_client: Client | None = None
_reader: Reader | None = None


def configure(
    db_path: str | os.PathLike[str] | None = None,
    *,
    spawn_writer: bool = False,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    block_when_full: bool = False,
) -> None:
    """Set the database and Client options of get_client() and get_reader(); call once, at start-up.

    The options are Client's. Raises DefaultsInUse if a handle was already made with other
    settings, ValueError for a buffer_limit below 1.
    """
    global _settings
    if buffer_limit < 1:
        raise ValueError("buffer_limit must be at least 1 operation")
    path = None if db_path is None or str(db_path) == "" else _database(db_path)
    wanted = _Settings(path, spawn_writer, buffer_limit, block_when_full)
    with _lock:
        if _client is None and _reader is None:
            _settings = wanted
            return
        in_use = _settings
    if wanted.db_path is None and in_use.db_path is not None:
        # configure() with no path means the default database, the one the handles may be on.
        wanted = _resolved(wanted)
    if wanted != in_use:
        raise DefaultsInUse(
            f"configure() came after get_client() or get_reader() made the process-wide handles"
            f" for {in_use.db_path} ({_describe(in_use)}); configure once at start-up, before"
            " them, or call close_defaults() first"
        )


def get_client() -> Client:
    """The process-wide Client: the same object on every call, from every thread (made on the first)."""
    global _client, _settings
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            _settings = _resolved(_settings)
            _client = Client(
                _argument(_settings.db_path),
                spawn_writer=_settings.spawn_writer,
                buffer_limit=_settings.buffer_limit,
                block_when_full=_settings.block_when_full,
            )
        return _client


def get_reader() -> Reader:
    """The process-wide Reader: the same object on every call, from every thread (made on the first)."""
    global _reader, _settings
    reader = _reader
    if reader is not None:
        return reader
    with _lock:
        if _reader is None:
            _settings = _resolved(_settings)
            _reader = Reader(_argument(_settings.db_path))
        return _reader


def close_defaults(timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
    """Close the process-wide Client (bounded flush, within `timeout` s) and forget both handles.

    True if the Client left nothing unconfirmed (or none was made). The next get_client() or
    get_reader() makes new ones with the settings configured, and configure() may change those.
    """
    global _client, _reader
    with _lock:
        client, reader = _client, _reader
        _client = _reader = None
    if reader is not None:
        reader.close()  # this thread's connection; other threads' close when those threads end
    # Outside the lock: a flush may take `timeout`, and other threads may go on meanwhile.
    return client.close(timeout=timeout) if client is not None else True


def _resolved(settings: _Settings) -> _Settings:
    """The settings with the database path fixed, so that both handles are on the same file."""
    if settings.db_path is not None:
        return settings
    return dataclasses.replace(settings, db_path=_database(None))


def _database(db_path: str | os.PathLike[str] | None) -> Path | DatabaseURL:
    """The file or server the handles will use (a URL only of a backend they can use)."""
    return locations.resolve_database(db_path, READER_AND_CLIENT_BACKENDS)


def _argument(database: Path | DatabaseURL | None) -> str | Path | None:
    """What Client() and Reader() take for `database`: the path, or the URL's text."""
    return database.url if isinstance(database, DatabaseURL) else database


def _describe(settings: _Settings) -> str:
    return (
        f"spawn_writer={settings.spawn_writer}, buffer_limit={settings.buffer_limit},"
        f" block_when_full={settings.block_when_full}"
    )


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
