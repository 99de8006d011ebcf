"""The writer actor: lease, PULL loop, batches in WAL transactions, notices, clean shutdown."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from .. import backends, connection, leases, locations
from ..database import is_environmental
from ..keys import KeyStore
from ..protocol import feed, statements
from ..protocol.errors import LeaseLostError, SeePersistenceError
from . import liveness
from .auth import plain_server
from .batch import BatchResult, PreparedBatch, SequenceBook
from .checkpointer import WAL_RESTART_PAGES, Checkpointer
from .courtesy import LockCourtesy
from .instances import InstanceRetention
from .lease import HEARTBEAT_INTERVAL_S, Overrun, WriterLease
from .loop import (
    BATCH_MAX_BYTES,
    BATCH_MAX_MESSAGES,
    BATCH_WINDOW_S,
    IDLE_POLL_S,
    WriterLoop,
)
from .loop import now_us as _now_us
from .metrics import PUBLISH_INTERVAL_S, WriterMetrics
from .notify import SystemdNotifier
from .remote import RemoteInstances
from .retention import PruneRunner
from .storage import DatabaseRefused, open_write_connection, prepare_database_file
from .upgrading import upgrade_when_free

log = logging.getLogger("see_persistence.writer")

# While another program writes the file, smaller transactions: it waits for the one under way.
COURTEOUS_BATCH_MAX_BYTES = 128 * 1024
# How often the writer looks whether its path still leads to the file it has open, and whether
# its socket files and directories are still there and its own: a stat or two, once a second.
PATH_CHECK_INTERVAL_S = 1.0
_COMPANION_SUFFIXES = ("-wal", "-shm")


class DatabaseFileGone(SeePersistenceError):
    """The database path no longer leads to the file this writer has open (deleted, moved, replaced)."""


def _inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclass
class _Listener:
    """The writer's two sockets bound in one socket directory, and the inodes of the files they made."""

    endpoints: locations.Endpoints
    pull_inode: int | None
    pub_inode: int | None

    def intact(self) -> bool:
        """True while both socket files are still the ones this writer bound."""
        pull_path, pub_path = self.endpoints.paths()
        return _inode(pull_path) == self.pull_inode and _inode(pub_path) == self.pub_inode


def _unbind(socket: zmq.Socket[Any], endpoint: str) -> None:
    try:
        socket.unbind(endpoint)
    except zmq.ZMQError:
        pass  # never bound, or its file already gone


def _remove_socket_files_if_ours(listener: _Listener) -> None:
    # libzmq leaves the ipc file behind on close; remove it only if it is still the one we
    # bound (same inode), never a file a newer writer bound at the same path.
    for path, inode in zip(
        listener.endpoints.paths(), (listener.pull_inode, listener.pub_inode), strict=True
    ):
        if inode is not None and _inode(path) == inode:
            try:
                os.unlink(path)
            except OSError:
                pass


def _files_open_as(paths: list[Path]) -> dict[Path, locations.FileIdentity]:
    """Of `paths`, those this process has open under that very name: path -> the open file's identity.

    Read from /proc/self/fd (Linux); a file deleted or renamed since it was opened shows
    under its new name there, so it is not matched. Empty where /proc is not available.
    """
    wanted = {str(path): path for path in paths}
    found: dict[Path, locations.FileIdentity] = {}
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target in wanted:
                info = os.stat(f"/proc/self/fd/{fd}")
                found[wanted[target]] = locations.FileIdentity(info.st_dev, info.st_ino)
        except OSError:
            continue  # closed meanwhile (the fd of the listing itself, say)
    return found


def _where_the_file_went(identity: locations.FileIdentity) -> str:
    """'deleted', 'moved to PATH', or '' if this process has no descriptor of that file (Linux /proc)."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return ""
    for fd in descriptors:
        try:
            info = os.stat(f"/proc/self/fd/{fd}")
            if (info.st_dev, info.st_ino) != identity:
                continue
            if info.st_nlink == 0:
                return "deleted"
            return f"moved to {os.readlink(f'/proc/self/fd/{fd}')}"
        except OSError:
            continue
    return ""


class Writer(WriterLoop):
    """The single writer of one database. `run()` blocks until `stop()` or SIGTERM/SIGINT.

    Raises LeaseHeldError from run() when another live writer holds the lease (unless
    `standby`, which waits and takes over), and LeaseLostError when fenced off. Refuses,
    with DatabaseRefused, a file that is not SQLite or holds someone else's tables (unless
    `adopt`), and a missing directory other than the default one (FileNotFoundError); a file
    with more than one name (HardLinkedDatabase); a socket directory that is not the user's
    own (PermissionError). Raises DatabaseFileGone once its path no longer leads to the file
    it has open (deleted, moved or replaced): it then commits and confirms nothing more.

    `listen` names where it listens: "ipc" (the sockets derived from the database path, in
    the owner-only socket directory) and/or `tcp://HOST:PORT` endpoints, CURVE-encrypted and
    open only to client keys on the allow-list of `keys_dir` (keys.KeyStore); the default is
    connection.default_listen(): ipc where libzmq has it, else TCP on a free loopback port.
    The lease row records every endpoint bound and the writer's public key.

    An instance on another host (another leases.host_id) is alive while it is heard from: it
    is marked dead once no message or heartbeat of it arrived for `remote_silence_s`.

    With `exit_when_idle_s` it also stops on its own, as after `stop()`, once no message has
    arrived and no live GUI instance has been seen for that long: a writer a GUI spawned
    should not outlive every GUI. Without it (a supervisor's writer) it runs until stopped.
    """

    def __new__(cls, db_path: str | os.PathLike[str] | None = None, **options: Any) -> Writer:
        """A postgresql:// URL (given, or in $SEE_PERSISTENCE_DB) makes a pg_service.PostgresWriter."""
        database = backends.parse_database(db_path or os.environ.get(locations.DB_ENV_VAR) or "")
        if database is None or cls is not Writer:
            return super().__new__(cls)
        backends.require_backend(database, backends.WRITER_BACKENDS)
        from .pg_service import PostgresWriter

        return PostgresWriter(database.url, **options)  # type: ignore[return-value]

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        standby: bool = False,
        synchronous: str = "NORMAL",
        batch_max_messages: int = BATCH_MAX_MESSAGES,
        batch_window_s: float = BATCH_WINDOW_S,
        dead_letters_kept: int = statements.DEAD_LETTERS_KEPT,
        adopt: bool = False,
        exit_when_idle_s: float | None = None,
        instances_kept_s: float = statements.INSTANCES_KEPT_S,
        dead_letter_bytes_kept: int = statements.DEAD_LETTER_BYTES_KEPT,
        listen: Sequence[str] | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        remote_silence_s: float = leases.REMOTE_SILENCE_S,
    ) -> None:
        self.db_path: Path = locations.resolve_db_path(db_path)
        self.endpoints = locations.endpoints_for(self.db_path)
        wanted = list(listen) if listen else connection.default_listen()
        self._listen_ipc = connection.IPC in wanted
        super().__init__(
            standby=standby,
            tcp_specs=[spec for spec in wanted if spec != connection.IPC],
            batch_max_messages=batch_max_messages,
            batch_window_s=batch_window_s,
            dead_letters_kept=dead_letters_kept,
            dead_letter_bytes_kept=dead_letter_bytes_kept,
            book=SequenceBook(),
            instance_retention=InstanceRetention(instances_kept_s),
            remote_silence_s=remote_silence_s,
        )
        if self._listen_ipc and not zmq.has("ipc"):
            raise ValueError("this build of libzmq has no ipc transport: listen on tcp://... instead")
        self._keystore = KeyStore(keys_dir) if self._tcp_specs else None
        self.synchronous = synchronous
        if exit_when_idle_s is not None and not exit_when_idle_s > 0:
            raise ValueError("exit_when_idle_s must be a positive number of seconds")
        self.adopt = adopt
        self.exit_when_idle_s = exit_when_idle_s
        self._last_needed = time.monotonic()  # the last message, or the last live instance seen
        self._conn: sqlite3.Connection | None = None
        self._lease: WriterLease | None = None
        self._checkpointer: Checkpointer | None = None
        self._listeners: dict[Path, _Listener] = {}  # socket directory -> what is bound there
        self._refusals: dict[Path, str] = {}  # socket directory -> why it was last refused (logged once)
        self._unreachable_logged = False
        self._file_identity: locations.FileIdentity | None = None  # of the file this writer has open
        self._file_gone: str | None = None  # why the path no longer leads to it, once seen
        self._links_logged = 1
        self._next_file_check = 0.0
        self._next_socket_check = 0.0
        self._courtesy = LockCourtesy()
        self._notifier = SystemdNotifier()

    # -- which errors are the database's (writer/loop.py) --------------------------------------

    db_errors = (sqlite3.Error,)

    # -- the three phases ---------------------------------------------------------------------

    def initialize(self) -> bool:
        """Open and upgrade the file, take the lease, then bind. False if stopped while standing by."""
        if self._keystore is not None:
            self._keys = self._keystore.writer_pair()  # refused here, before the lease, if not safe
        prepare_database_file(self.db_path, adopt=self.adopt)
        directories = self._socket_directories() if self._listen_ipc else []
        if directories:
            self.endpoints = locations.endpoints_for(self.db_path, directories[0])
        try:
            self._conn = open_write_connection(self.db_path, self.synchronous)
            # The file SQLite just opened: from now on the path must keep leading to it. (A
            # rename between the open and this stat is caught by the check after the second open.)
            self._file_identity = locations.file_identity(self.db_path)
            # Another process may hold the write lock for long (upgrading a large file): wait
            # for it, as a standby waits for the lease, rather than fail with "database is locked".
            if not upgrade_when_free(
                self._conn, _now_us, standby=self.standby, should_stop=self._should_stop_standing_by
            ):
                return False
        except sqlite3.DatabaseError as exc:
            # SQLite's messages name no file ("attempt to write a readonly database").
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatabaseRefused(f"cannot open {self.db_path} for writing: {first_line}") from exc
        self._check_database_file()
        me = leases.current_process()
        # A TCP-only writer names its first listen address until it has bound the real port.
        lease_endpoint = self.endpoints.pull if self._listen_ipc else self._tcp_specs[0]
        self._lease = WriterLease(self._conn, me, lease_endpoint, self.db_path)
        self._lease.courtesy = self._courtesy
        self._lease.stand_aside = self._stand_aside
        self._lease.on_commit = self._publish_change
        if not self._lease.acquire(standby=self.standby, should_stop=self._should_stop_standing_by):
            return False
        # Checkpoints move to a thread of their own: inside a commit they stall it. SQLite's
        # own stays, rarely, to let the WAL start over (see writer/checkpointer.py).
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_RESTART_PAGES}")
        self._check_database_file()  # before the checkpointer opens the path (and creates a file there)
        self._checkpointer = Checkpointer(self.db_path, self.synchronous)
        self._check_database_file()  # the checkpointer opened the path again: the same file?
        # Only now, holding the lease, may we bind: a bind on an ipc path steals it.
        self._open_sockets()
        assert self._pull is not None
        for directory in directories:
            self._listen(directory)
        if self._tcp_specs:
            self._listen_tcp()
        self._record_listeners()
        self._next_heartbeat = time.monotonic()
        self._next_file_check = self._next_socket_check = time.monotonic() + PATH_CHECK_INTERVAL_S
        self._next_sweep = time.monotonic()
        self._next_publish = time.monotonic()
        self._metrics = WriterMetrics(pid=me.pid, epoch=self._lease.epoch, started_us=_now_us())
        self._lease.on_transaction = self._metrics.record_transaction
        self._last_needed = time.monotonic()  # a standby's idle time counts from its takeover
        # Remote instances' silence counts from now: they need the time to find this writer.
        self._remote = RemoteInstances(self._remote.silence_s)
        # Prune jobs, in chunks between batches; an unfinished one in the file is taken up at once.
        self._prunes = PruneRunner(
            self._conn, self._lease.transaction, self._pull, self._stop, self._checkpointer.committed
        )
        self._ready.set()
        log.info(
            "writer pid %d serving %s on %s",
            me.pid,
            self.db_path,
            ", ".join(pull for pull, _pub in self._listening_pairs()),
        )
        self._notifier.ready(f"serving {self.db_path} as epoch {self._lease.epoch}")
        return True

    def loop_once(self) -> None:
        """Wait briefly for messages, commit them as one batch, then do what is due."""
        assert self._pull is not None
        now = time.monotonic()
        timeout_s = max(
            0.0,
            min(IDLE_POLL_S, self._next_heartbeat - now, self._next_sweep - now, self._next_file_check - now),
        )
        if self._pull.poll(int(timeout_s * 1000)):
            raws = self._receive_batch(
                COURTEOUS_BATCH_MAX_BYTES if self._courtesy.polite() else BATCH_MAX_BYTES
            )
            if raws:
                self._last_needed = time.monotonic()
                self._commit(raws)
                self._stand_aside_after_overrun()
        now = time.monotonic()
        if now >= self._next_file_check:
            self._check_database_file()
        if now >= self._next_socket_check:
            self._check_sockets()
            self._next_socket_check = now + PATH_CHECK_INTERVAL_S
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
        if now >= self._next_sweep:
            self._sweep()
            self._next_sweep = now + liveness.SWEEP_INTERVAL_S
            self._exit_if_idle(now)
        if now >= self._next_publish:
            self._publish_metrics()
            self._next_publish = now + PUBLISH_INTERVAL_S
        self._prunes.run()
        self._stand_aside_after_overrun()
        self._notifier.watchdog()

    def shutdown(self) -> None:
        """Release the lease and close sockets and the connection (safe to call twice)."""
        if self._pull is not None:
            self._remove_socket_files_if_ours()
            self._pull.close(linger=0)
            self._pull = None
        if (
            self._lease is not None
            and self._lease.epoch
            and self._conn is not None
            and self._file_gone is None
        ):
            # (Not in a file the path no longer leads to: a standby there would take it over at
            # once, before it too sees the file gone. Once this process ends it is not held.)
            try:
                self._lease.release(_now_us())
            except sqlite3.Error as exc:
                log.error("could not release the lease: %s", exc)
            self._lease = None
        self._close_sockets()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            if self._file_gone is not None:
                self._retire_companions()
            self._conn.close()
            self._conn = None

    # -- inside the loop ------------------------------------------------------------------------

    def _stand_aside_after_overrun(self) -> None:
        """Stand aside now if a transaction overran (the next transaction would do it anyway)."""
        assert self._lease is not None
        overrun = self._lease.overrun
        if overrun is not None:
            self._lease.overrun = None
            self._stand_aside(overrun)

    def _stand_aside(self, overrun: Overrun) -> None:
        """After a transaction that overran, let a writer that presumed this one dead take over.

        Commits nothing until this writer's heartbeat has looked stale to everyone for a
        while, then looks at the lease: another writer holds it now (a standby, or one a GUI
        spawned) -> LeaseLostError (exit 4); nobody took it -> carry on, as the writer it is.
        A slow disk with nobody standing by must not leave the database without a writer.
        """
        assert self._lease is not None
        if self._metrics is not None:
            self._metrics.count("overruns")
        until = self._lease.stand_aside_until(overrun)
        log.warning(
            "a transaction of this writer (epoch %d) lasted %.1f s, so others may presume it dead:"
            " it commits nothing for %.1f s, then carries on unless another writer took the lease",
            self.epoch,
            overrun.seconds,
            max(0.0, until - time.monotonic()),
        )
        while (left_s := until - time.monotonic()) > 0 and not self._stop.is_set():
            self._notifier.watchdog()  # alive, and waiting on purpose: a restart would not help
            self._stop.wait(min(left_s, IDLE_POLL_S))
        holder = self._lease.still_mine()
        if holder is not None:
            self._book.forget()
            raise LeaseLostError(
                f"lost the writer lease (epoch {self.epoch}) while standing aside after a"
                f" {overrun.seconds:.1f} s transaction: it is now held by pid {holder.pid}"
                f" on {holder.host}, epoch {holder.epoch}"
            )
        log.info(
            "no other writer took the lease while this one stood aside: carrying on as epoch %d", self.epoch
        )
        self._next_heartbeat = time.monotonic()  # show the watchers at once that it is alive

    def _exit_if_idle(self, now: float) -> None:
        """Stop once nobody has needed this writer for exit_when_idle_s (if it was given)."""
        if self.exit_when_idle_s is None or self._stop.is_set():
            return
        if self._live_instances() != 0:
            self._last_needed = now
            return
        idle_s = now - self._last_needed
        if idle_s >= self.exit_when_idle_s:
            log.info(
                "no live instance and no message for %.1f s (exit when idle after %g s): stopping",
                idle_s,
                self.exit_when_idle_s,
            )
            self._stop.set()

    def _live_instances(self) -> int | None:
        """Instances registered live on this host, as the sweep just left them (None: unknown).

        The sweep that runs just before marks every one whose process is gone as dead, so
        the rows still 'live' are processes it found running: the pid check is the sweep's,
        not done twice. The WHERE clause is the sweep's (liveness.find_dead_instances): a row
        it cannot check (no pid yet, another host name without a boot id) keeps no writer
        alive. An instance of another host id counts while it is live: the sweep marks it
        dead once it falls silent (writer/remote.py).
        """
        assert self._conn is not None
        try:
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM instances WHERE ({liveness.CHECKABLE_LIVE_INSTANCES})"
                " OR (state = 'live' AND host_id IS NOT NULL AND host_id <> :host_id)",
                {"host": leases.host_name(), "host_id": leases.host_id()},
            ).fetchone()
        except sqlite3.Error as exc:
            log.error("could not count the live instances: %s", exc)
            return None  # unknown counts as needed: never leave because of a read error
        return int(row[0])

    def _publish_metrics(self) -> None:
        assert self._conn is not None and self._lease is not None and self._metrics is not None
        now_us = _now_us()
        self._metrics.totals["other_writer_commits_seen"] = self._courtesy.other_commits_seen
        try:
            self._feed_next = feed.Coalescer()  # counters are no record a watcher shows
            with self._lease.transaction(now_us):
                self._metrics.publish(self._conn, now_us)
            if self._checkpointer is not None:
                self._checkpointer.committed()  # the heartbeats and counters of an idle writer too
        except LeaseLostError:
            raise
        except sqlite3.Error as exc:
            self._feed_next = None
            log.error("could not publish the writer's counters: %s", exc)

    # -- the database file -------------------------------------------------------------------

    def _check_database_file(self) -> None:
        """Raise DatabaseFileGone unless the path still leads to the file this writer has open.

        rm of the file (or of its directory), mv, or another file put in its place: the writer
        would go on committing into a file no name reaches, and confirming it to clients. It
        stops instead, and says where the file went.
        """
        self._next_file_check = time.monotonic() + PATH_CHECK_INTERVAL_S
        if self._file_gone is not None:
            raise DatabaseFileGone(self._file_gone)
        try:
            info: os.stat_result | None = os.stat(self.db_path)
        except (FileNotFoundError, NotADirectoryError):
            info = None
        except OSError as exc:
            log.warning("cannot check that %s is still the file this writer has open: %s", self.db_path, exc)
            return  # cannot tell (a directory made unreadable): not a reason to stop
        opened = self._file_identity
        if info is not None and opened is not None and (info.st_dev, info.st_ino) == opened:
            if info.st_nlink > self._links_logged:
                log.warning(
                    "%s now has %d names (hard links): writers and clients refuse it under any of"
                    " them from now on; this writer goes on serving it under this one",
                    self.db_path,
                    info.st_nlink,
                )
            self._links_logged = info.st_nlink
            return
        went = _where_the_file_went(opened) if opened is not None else ""
        if info is None:
            what = f"the database file {self.db_path} is gone"
        else:
            what = f"{self.db_path} is now another file than the one this writer opened"
        if went:
            what += f" (the file this writer had open was {went})"
        self._file_gone = (
            f"{what}: this writer stops, committing and confirming nothing more; clients keep what"
            " they sent for a writer of the file now at that path"
        )
        log.error("%s", self._file_gone)
        raise DatabaseFileGone(self._file_gone)

    def _should_stop_standing_by(self) -> bool:
        """A standby's question while it waits: stopped? (Raises if its file is gone meanwhile.)"""
        self._check_database_file()  # each poll: a stat every 0.1 s, and a takeover never lags it
        return self._stop.is_set()

    def _retire_companions(self) -> None:
        """Once the path no longer leads to our file: fold its WAL into it, and free the old names.

        SQLite skips its checkpoint on close once it sees the file moved, so a moved file would
        lack what only its WAL holds; and the -wal and -shm at the old path are still this
        file's: a writer starting there would take them for its own (SQLite shares the -shm
        index between every process that opens the name). The names are removed only while
        they lead to the very files this process has open, and the -wal of a moved file only
        once everything in it is in the file.
        """
        assert self._conn is not None
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            log.error("could not checkpoint the WAL into the file that was at %s: %s", self.db_path, exc)
            busy = 1
        went = _where_the_file_went(self._file_identity) if self._file_identity is not None else ""
        companions = [Path(f"{self.db_path}{suffix}") for suffix in _COMPANION_SUFFIXES]
        for path, identity in _files_open_as(companions).items():
            if busy and went != "deleted" and path.name.endswith("-wal"):
                log.error(
                    "%s still holds commits of the file that was at %s (%s); it is left in place",
                    path,
                    self.db_path,
                    went or "moved",
                )
                continue
            if locations.file_identity(path) != identity:
                continue
            try:
                os.unlink(path)
            except OSError as exc:
                log.error(
                    "could not remove %s, which belongs to the file that was at %s: %s",
                    path,
                    self.db_path,
                    exc,
                )
                continue
            log.info("removed %s: it belongs to the file that was at %s", path, self.db_path)

    # -- the socket files and directories ------------------------------------------------------

    def _socket_directories(self) -> list[Path]:
        """The socket directories this writer can listen in, made owner-only; raises if none.

        One refused while another serves (someone squats /tmp/see-persistence-<uid>, but
        /run/user/<uid> is ours) is logged and tried again every second.
        """
        usable: list[Path] = []
        refused: list[tuple[Path, OSError]] = []
        for directory in locations.runtime_dirs():
            try:
                locations.ensure_private_directory(directory)
                locations.check_socket_files(locations.endpoints_for(self.db_path, directory))
            except OSError as exc:
                refused.append((directory, exc))
                continue
            usable.append(directory)
        if not usable:
            raise refused[0][1]
        for directory, error in refused:
            self._note_refusal(directory, str(error))
        return usable

    def _listening_pairs(self) -> list[tuple[str, str]]:
        """Every (pull, pub) endpoint pair bound now: the ipc ones, then the TCP ones."""
        ipc = [(bound.endpoints.pull, bound.endpoints.pub) for bound in self._listeners.values()]
        return ipc + self._tcp_pairs

    def _record_listeners(self) -> None:
        """Write the endpoints bound and the public key into the lease row, where clients look."""
        assert self._lease is not None
        pairs = self._listening_pairs()
        endpoint = pairs[0][0] if pairs else self._lease.endpoint
        public_key = self._keys.public if self._keys is not None and self._tcp_pairs else None
        self._feed_next = feed.Coalescer()  # no record a watcher shows
        self._lease.record_listeners(_now_us(), endpoint, pairs, public_key)

    def _listen(self, directory: Path) -> None:
        """Bind both sockets in `directory`, which the caller made sure is ours and owner-only."""
        assert self._pull is not None and self._pub is not None
        endpoints = locations.endpoints_for(self.db_path, directory)
        locations.check_socket_files(endpoints)
        if self._tcp_specs:
            for socket in (self._pull, self._pub):
                plain_server(socket)  # the ZAP handler must tell an ipc listener from a TCP one
        self._pull.bind(endpoints.pull)
        try:
            self._pub.bind(endpoints.pub)
        except zmq.ZMQError:
            _unbind(self._pull, endpoints.pull)
            raise
        pull_path, pub_path = endpoints.paths()
        self._listeners[directory] = _Listener(endpoints, _inode(pull_path), _inode(pub_path))

    def _unlisten(self, directory: Path) -> None:
        assert self._pull is not None and self._pub is not None
        listener = self._listeners.pop(directory)
        _unbind(self._pull, listener.endpoints.pull)
        _unbind(self._pub, listener.endpoints.pub)
        _remove_socket_files_if_ours(listener)

    def _note_refusal(self, directory: Path, reason: str) -> None:
        """Log why a socket directory is not listened in, once per reason."""
        if self._refusals.get(directory) != reason:
            self._refusals[directory] = reason
            log.warning("not listening in %s: %s", directory, reason)

    def _check_sockets(self) -> None:
        """Keep both sockets bound, as our own files, in every socket directory that is ours.

        Rebinds where a socket file vanished or was replaced (someone removed the path, a /tmp
        cleaner removed the directory), binds where /run/user/<uid> appeared after the start
        (the user logged in after a supervisor started this writer), unbinds where it went.
        """
        if not self._listen_ipc:
            return
        wanted = locations.runtime_dirs()
        for directory in [d for d in self._listeners if d not in wanted]:
            log.info(
                "%s is no longer a socket directory (the session ended?): not listening there", directory
            )
            self._unlisten(directory)
        for directory in wanted:
            listener = self._listeners.get(directory)
            problem = locations.private_directory_problem(directory)
            if listener is not None and problem is None and listener.intact():
                continue
            if listener is not None:
                log.warning(
                    "socket %s was removed or replaced%s; binding it again",
                    listener.endpoints.paths()[0],
                    f" ({problem})" if problem else "",
                )
                self._unlisten(directory)
            try:
                locations.ensure_private_directory(directory)
                self._listen(directory)
            except (OSError, zmq.ZMQError) as exc:
                self._note_refusal(directory, str(exc))
                continue
            if self._refusals.pop(directory, None) is not None or listener is None:
                log.info("listening in %s", directory)
        if not self._listeners and not self._unreachable_logged:
            log.error("no socket directory can be used: no client can reach this writer until one can")
        self._unreachable_logged = not self._listeners

    def _remove_socket_files_if_ours(self) -> None:
        for listener in self._listeners.values():
            _remove_socket_files_if_ours(listener)

    # -- the loop's hooks (writer/loop.py) -----------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _apply(self, conn: sqlite3.Connection, prepared: PreparedBatch, now_us: int) -> BatchResult:
        assert self._lease is not None
        with self._lease.transaction(now_us):
            return prepared.apply(
                conn,
                self._book,
                dead_letters_kept=self.dead_letters_kept,
                dead_letter_bytes_kept=self.dead_letter_bytes_kept,
            )

    def _is_environmental(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error) and is_environmental(exc)

    def _still_alive(self) -> None:
        self._notifier.watchdog()

    def _before_confirming(self) -> None:
        if time.monotonic() >= self._next_file_check:
            # Before telling clients it is committed: into the file their path leads to? (At
            # most once a second: a client confirms what a notice says against the file too.)
            self._check_database_file()

    def _after_commit(self, result: BatchResult, commit_us: int) -> None:
        if self._checkpointer is not None:
            self._checkpointer.committed()
        super()._after_commit(result, commit_us)

    def _stopping(self) -> None:
        self._notifier.stopping()

    def _feed_flags(self) -> feed.Flag:
        return feed.Flag.FOREIGN if self._courtesy.foreign else feed.Flag.NONE

    def _find_dead(self, conn: sqlite3.Connection) -> list[Any]:
        return liveness.find_dead_instances(conn)

    def _find_silent(self, conn: sqlite3.Connection, now: float) -> list[Any]:
        return self._remote.find_silent(conn, leases.host_id(), now)

    def _abandon(self, conn: sqlite3.Connection, instance: Any, now_us: int) -> None:
        liveness.abandon(conn, instance, now_us)
