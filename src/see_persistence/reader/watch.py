"""Live views: a Watcher delivers the changes the writer committed, or an explicit Resync.

A background thread owns a SUB socket on the writer's PUB endpoint (topic b"f", the feed
notices of protocol/feed.py) and a read-only connection of its own. Each commit has a number
(writer_lease.commit_seq) and each writer's numbering a feed id; the watcher keeps a cursor
(feed id, last number) and delivers a notice's changes only when it is the very next commit
of the same feed. Anything it cannot vouch for becomes one `Resync` (re-read what you show):
its start, a skipped number, another writer, a replaced file, a commit of another program,
a notice too large to list, or more items waiting than `max_pending`.

Guarantee: changes come after their commit (a re-read sees them), in commit order, each at
most once; every gap is reported as a Resync, never as silence. Not guaranteed: that a change
is announced at all when a Resync covers it, nor that each listed change still applies (an
operation that became a dead letter may be listed).

Over TCP (where libzmq has no ipc, or $SEE_PERSISTENCE_TRANSPORT=tcp: the Client's rule), the
SUB socket is a CURVE client of the writer's PUB endpoint, which it reads from the lease row
with the writer's public key; its own key pair is this user's client pair (keys.KeyStore). It
follows the lease: with no writer named yet, or silent for NOTICE_SILENCE_S, it reads the row
again and connects anew where another writer listens. A writer that refuses the watcher's key
is logged at WARNING, shown in `stats.refused`, and delivered as one Resync(REFUSED): the
watcher then sees only what polling the file shows, as with no writer.

With no writer heard from for NOTICE_SILENCE_S, the watcher polls `PRAGMA data_version` on
its own connection every `poll_interval_s`, so changes made to the file directly (a restore,
the app's Rust core) still show as a Resync(OTHER_WRITER).

Ways to wait: `get(timeout)` or iteration from a thread; `fileno()` in an event loop (Qt's
QSocketNotifier, selectors), then `poll()`; `aget()` or `async for` under asyncio; all of them
drain the same queue. Or hand the watcher an `on_change` callback: a thread of its own then
takes every item from that queue and calls it, and the other ways are refused (two consumers
would split the items between them).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from .. import connection, locations
from ..database import open_read_only
from ..keys import KeyPair, KeyStore
from ..protocol import feed
from ..protocol.errors import RejectedMessage, WatcherHasCallback

log = logging.getLogger("see_persistence.reader")

POLL_INTERVAL_S = 0.25
# A live writer publishes a notice at least every HEARTBEAT_INTERVAL_S (0.5 s); this long
# without one, the watcher takes it that no writer runs, and polls data_version itself.
NOTICE_SILENCE_S = 1.5
MAX_PENDING = 4096
# Notices queued inside ZeroMQ for a watcher that is slow to take them: past it the writer's
# PUB drops them (it never waits), and the watcher sees the skipped number: a Resync.
RECEIVE_HIGH_WATER_MARK = 1000
# Records of another writer's tables looked up for a filter (a task's workflow, a record's
# instance), remembered per watcher.
LOOKUPS_KEPT = 10_000
# How often an awaiting aget() looks whether the watcher was closed from another thread (a
# closed descriptor never becomes readable).
ASYNC_CLOSE_CHECK_S = 0.25
# Before blaming another program for a change seen after a silence, how long to wait for the
# writer's notices that may still be on their way (its queue drains as this process resumes).
RESUMED_GRACE_MS = 100
# How long close() waits for each of the watcher's threads: the receiving one, and a callback
# under way (one that waits on the thread calling close() would otherwise hang it for good).
CLOSE_TIMEOUT_S = 5.0
# Over TCP, a watcher refused by the writer asks again this often (its key may be allowed since).
REFUSED_RETRY_S = 5.0
_TCP_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class ResyncCause(str, enum.Enum):
    """Why a watcher cannot vouch for what it would have delivered; compares equal to its text."""

    STARTED = "started"  # the first item: read what you show now, changes follow
    MISSED = "missed"  # a commit number was skipped (a notice dropped, a late subscription)
    NEW_WRITER = "new_writer"  # another writer numbers the commits now (a takeover, a restart)
    FILE_REPLACED = "file_replaced"  # the path leads to another file (a restore)
    OTHER_WRITER = "other_writer"  # another program wrote the file directly
    MANY_CHANGES = "many_changes"  # a commit changed more records than a notice lists
    OVERFLOW = "overflow"  # more than max_pending items waited: they were replaced by this one
    REFUSED = "refused"  # over TCP, the writer refused this watcher (stats.refused says why)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Change:
    """One record a commit changed: kind, id, its workflow (None: unknown), its new status, the commit.

    `committed_at_us` is the writer's wall clock when that COMMIT returned, in microseconds
    since the Unix epoch (None from a writer that does not say).
    """

    kind: feed.Kind
    id: str
    workflow_id: str | None
    status: str | None
    seq: int
    committed_at_us: int | None = None


@dataclass(frozen=True)
class Resync:
    """Re-read what you show: the watcher cannot vouch for what changed (see `cause`)."""

    cause: ResyncCause
    seq: int | None  # the commit number the watcher resumes after (None: not known)


@dataclass
class WatcherStats:
    """What a watcher saw, as plain ints (and whether it is polling the file itself)."""

    notices: int = 0
    changes: int = 0
    resyncs: int = 0
    overflowed: int = 0  # items dropped because more than max_pending waited
    data_version_polls: int = 0
    callback_errors: int = 0  # calls of the on_change callback that raised (each one logged)
    polling: bool = False  # no writer heard from: data_version is polled instead
    refused: str | None = None  # over TCP: why the writer refused the last handshake (None: it did not)
    by_cause: dict[str, int] = field(default_factory=dict)


Item = Change | Resync
ChangeKind = feed.Kind  # what kind of record a Change is about (workflow, task, task_log, ...)
OnChange = Callable[[Item], object]  # what `on_change` is called with: each Change or Resync


class Watcher:
    """Changes committed to one database, filtered, from a background thread; see the module.

    With `on_change`, one thread of the watcher's own calls `on_change(item)` for every item
    (the first is Resync(STARTED)), one call at a time, in the order the items came. A GUI
    must hand what it draws to its own thread from there (a Qt signal does; Tk's
    `after`/`event_generate` do). An exception the callback raises is logged with its
    traceback on the "see_persistence.reader" logger and counted in
    `stats.callback_errors`; the next item is delivered all the same. A callback slower
    than the commits gets a Resync(OVERFLOW) once `max_pending` items wait, as any consumer
    does. Such a watcher refuses get(), poll(), fileno(), aget() and iteration
    (WatcherHasCallback).
    """

    # Over TCP whatever the platform's transport (a database on a server has no ipc socket).
    _always_tcp = False

    def __init__(
        self,
        db_path: Path | str,
        *,
        workflow_id: str | None = None,
        kinds: Iterable[feed.Kind | str] | None = None,
        instance_id: str | None = None,
        max_pending: int = MAX_PENDING,
        poll_interval_s: float = POLL_INTERVAL_S,
        endpoints: locations.Endpoints | None = None,
        on_change: OnChange | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, not {type(on_change).__name__}")
        self.db_path = db_path
        self.workflow_id = workflow_id
        self.kinds = frozenset(feed.Kind(kind) for kind in kinds) if kinds is not None else None
        self.instance_id = instance_id
        self.max_pending = max_pending
        self.poll_interval_s = poll_interval_s
        self.stats = WatcherStats()
        # Over TCP: this user's client key pair, and where the lease says the writer publishes.
        self._keys: KeyPair | None = None
        self._tcp: connection.TcpEndpoints | None = None
        self._endpoints: locations.Endpoints | None = None
        if endpoints is None and (self._always_tcp or connection.default_transport() == connection.TCP):
            self._keys = KeyStore(keys_dir).client_pair()
            self._lease_reader = self._new_lease_reader()
        else:
            self._endpoints = endpoints if endpoints is not None else locations.endpoints_for(Path(db_path))
            locations.ensure_private_directory(self._endpoints.directory)
            locations.check_socket_files(self._endpoints)
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        # Readable while items wait (level-triggered, unlike ZeroMQ's own edge-triggered FD).
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        self._closed = False
        self._stop = threading.Event()
        self._context: zmq.Context[Any] = zmq.Context()
        self._sub = self._new_sub()
        self._monitor: zmq.Socket[Any] | None = None
        self._refused_at: float | None = None
        # Subscribe first, then read the file (the Guide's Clone order): a commit between the two
        # is either in what the caller reads after STARTED, or its notice shows a skipped number.
        if self._endpoints is not None:
            self._sub.connect(self._endpoints.pub)
        else:
            self._follow_lease()
            self._lease_reader.close()  # this thread's connection; the watcher's thread opens its own
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._cursor: tuple[int | None, int] = (None, 0)  # (feed id, last commit number)
        self._data_version: int | None = None
        self._signature: tuple[object, ...] = ()
        self._last_notice = time.monotonic()
        self._notified = False  # a notice came since the file was last looked at
        self._lookups: dict[tuple[str, str], str | None] = {}
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="see-persistence-watcher", daemon=True)
        self._callback_thread: threading.Thread | None = None
        if on_change is not None:
            self._callback_thread = threading.Thread(
                target=self._deliver, args=(on_change,), name="see-persistence-watcher-callback", daemon=True
            )
            self._callback_thread.start()
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item, waiting up to `timeout` seconds (None: until one comes or close)."""
        self._refuse_with_callback("get()")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._items:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._ready.wait(left)
            return self._take()

    def poll(self) -> list[Item]:
        """Every item waiting now, without waiting (for event loops, after fileno() is readable)."""
        self._refuse_with_callback("poll()")
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._drain_signal()
            return items

    def pending(self) -> int:
        """How many items wait."""
        with self._lock:
            return len(self._items)

    def fileno(self) -> int:
        """A descriptor readable while items wait (level-triggered): watch it, then call poll()."""
        self._refuse_with_callback("fileno()")
        return self._signal_r.fileno()

    def __iter__(self) -> Iterator[Item]:
        """Items as they come, until close()."""
        self._refuse_with_callback("iteration")  # here, not at the first next(): iter() refuses
        return self._items_until_closed()

    def _items_until_closed(self) -> Iterator[Item]:
        while True:
            item = self.get()
            if item is None:
                return
            yield item

    async def aget(self, timeout: float | None = None) -> Item | None:
        """The next item, awaited in an asyncio loop (None: `timeout` passed, or closed).

        The loop runs meanwhile: it watches `fileno()` (`loop.add_reader`, so not on Windows'
        Proactor loop). Cancelling it takes no item away: an item is taken only when returned.
        One awaiting consumer at a time: a second one on the same watcher takes over the descriptor.
        """
        self._refuse_with_callback("aget()")
        import asyncio  # here: a GUI that never awaits does not pay for importing it

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            item = self.get(timeout=0)
            if item is not None or self._closed:
                return item
            left_s = None if deadline is None else deadline - loop.time()
            if left_s is not None and left_s <= 0:
                return None
            ready: asyncio.Future[None] = loop.create_future()

            def wake(ready: asyncio.Future[None] = ready) -> None:
                if not ready.done():
                    ready.set_result(None)

            try:
                descriptor = self.fileno()
                loop.add_reader(descriptor, wake)
            except (OSError, ValueError):
                return None  # closed meanwhile
            try:
                slice_s = ASYNC_CLOSE_CHECK_S if left_s is None else min(left_s, ASYNC_CLOSE_CHECK_S)
                await asyncio.wait([ready], timeout=slice_s)
            finally:
                loop.remove_reader(descriptor)
                ready.cancel()

    async def __aiter__(self) -> AsyncIterator[Item]:
        """Items as they come, until close(), for `async for`."""
        while (item := await self.aget()) is not None:
            yield item

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Stop the threads and close the socket and connection; waiting get() calls return None.

        No call of `on_change` starts once close() has begun; one under way is waited for up
        to `timeout` seconds (not when close() is called from inside the callback itself:
        then the callback thread ends as soon as the callback returns). True if every thread
        of the watcher has ended, or is the caller's own; a later close() does nothing and
        returns True.
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self._ready.notify_all()
        self._stop.set()
        ended = True
        for thread in (self._callback_thread, self._thread):
            if thread is None or thread is threading.current_thread():
                continue
            thread.join(timeout=max(0.0, timeout))
            if thread.is_alive():
                ended = False
                log.warning("watcher of %s: %s still runs after close()", self.db_path, thread.name)
        self._signal_r.close()
        self._signal_w.close()
        return ended

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _refuse_with_callback(self, what: str) -> None:
        if self._on_change is not None:
            raise WatcherHasCallback(
                f"{what} on a Watcher made with on_change: the callback takes every item,"
                " and two consumers would split them between them"
            )

    def _deliver(self, on_change: OnChange) -> None:
        """The callback thread: each item, in order, until close()."""
        while True:
            with self._ready:
                while not self._items and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return  # what still waits is dropped: close() means no more calls
                item = self._take()
            try:
                on_change(item)
            except Exception:
                with self._lock:
                    self.stats.callback_errors += 1
                log.exception("watcher of %s: on_change raised on %r; delivery goes on", self.db_path, item)

    def _take(self) -> Item:
        item = self._items.popleft()
        if not self._items:
            self._drain_signal()
        return item

    def _drain_signal(self) -> None:
        try:
            while self._signal_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- the thread's side -------------------------------------------------------------------

    def _put(self, item: Item) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._items) >= self.max_pending:
                self.stats.overflowed += len(self._items)
                self._items.clear()
                item = Resync(ResyncCause.OVERFLOW, self._cursor[1])
            was_empty = not self._items
            self._items.append(item)
            if isinstance(item, Resync):
                self.stats.resyncs += 1
                self.stats.by_cause[item.cause.value] = self.stats.by_cause.get(item.cause.value, 0) + 1
            else:
                self.stats.changes += 1
            if was_empty:
                try:
                    self._signal_w.send(b"\0")
                except (BlockingIOError, OSError):
                    pass  # already readable
            self._ready.notify_all()

    def _resync(self, cause: ResyncCause) -> None:
        log.debug("watcher of %s: resync (%s) after commit %d", self.db_path, cause, self._cursor[1])
        self._put(Resync(cause, self._cursor[1]))

    def _run(self) -> None:
        try:
            self._open_file()
            if self._is_open():
                self._resync(ResyncCause.STARTED)
            next_check = time.monotonic() + self.poll_interval_s
            while not self._stop.is_set():
                self._receive(int(self.poll_interval_s * 1000))
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self.poll_interval_s
                    self._check_file(now)
        except Exception:
            log.exception("the watcher of %s failed", self.db_path)
        finally:
            self._sub.close(linger=0)
            if self._monitor is not None:
                self._monitor.close(linger=0)
            if self._keys is not None:
                self._lease_reader.close()
            self._context.term()
            self._close_database()

    def _receive(self, timeout_ms: int) -> bool:
        """Take every notice that arrives within `timeout_ms`; True if any came."""
        if self._monitor is not None:
            poller = zmq.Poller()
            poller.register(self._sub, zmq.POLLIN)
            poller.register(self._monitor, zmq.POLLIN)
            ready = dict(poller.poll(timeout_ms))
            if self._monitor in ready:
                self._on_monitor_events()
            if self._sub not in ready:
                return False
        elif not self._sub.poll(timeout_ms):
            return False
        while not self._stop.is_set():
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_frames(frames)
        return True

    # -- the database: a file here; a subclass may watch another kind (reader/watch_postgresql.py)

    def _new_lease_reader(self) -> Any:
        """A Reader of the database, for the lease row (where the writer publishes, and its key)."""
        from .queries import Reader  # here: queries imports this module

        return Reader(self.db_path)

    def _is_open(self) -> bool:
        """True once the database was opened (the watcher has started)."""
        return self._conn is not None

    def _close_database(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _open_file(self) -> None:
        """Open the file if it exists now and set the cursor from its lease row."""
        try:
            conn = open_read_only(Path(self.db_path))
        except (FileNotFoundError, sqlite3.Error):
            return  # not there yet: looked for again at each check
        if self._conn is not None:
            self._conn.close()
        self._conn = conn
        self._identity = _identity_of(Path(self.db_path))
        self._lookups.clear()
        self._data_version = self._read_data_version()
        self._signature = self._file_signature()
        self._cursor = self._read_cursor()

    def _read_cursor(self) -> tuple[int | None, int]:
        assert self._conn is not None
        try:
            row = self._conn.execute("SELECT feed_id, commit_seq FROM writer_lease WHERE id = 1").fetchone()
        except sqlite3.Error:
            return (None, 0)  # no lease table or no columns yet: an older file, no writer of ours
        if row is None:
            return (None, 0)
        return (row[0], row[1] or 0)

    def _read_data_version(self) -> int | None:
        assert self._conn is not None
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def _file_signature(self) -> tuple[object, ...]:
        """Size and mtime of the file and its WAL: data_version alone misses commits when no writer runs.

        A read-only connection opened after the last writer closed (no -shm left, and it may
        not create one) keeps its wal-index in its own memory and never sees the next one's
        commits in data_version; the files themselves change.
        """
        signature: list[object] = []
        db_path = Path(self.db_path)
        for path in (db_path, db_path.with_name(db_path.name + "-wal")):
            try:
                info = os.stat(path)
            except OSError:
                signature.append(None)
                continue
            signature.append((info.st_size, info.st_mtime_ns))
        return tuple(signature)

    # -- over TCP ------------------------------------------------------------------------------

    def _new_sub(self) -> zmq.Socket[Any]:
        sub: zmq.Socket[Any] = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, RECEIVE_HIGH_WATER_MARK)
        sub.setsockopt(zmq.SUBSCRIBE, feed.FEED_TOPIC)
        return sub

    def _follow_lease(self) -> None:
        """Over TCP: subscribe where the lease row says the writer publishes, if that changed.

        A new writer (a takeover binds other ports, maybe another key) gets a new socket: the
        CURVE server key is a socket option, set before connecting. A refused watcher asks the
        same writer again after REFUSED_RETRY_S.
        """
        # Imported here: the client package imports the reader's, so a module-level import
        # would be circular. One reading of the lease for the Client and the Watcher.
        from ..client.transport import tcp_endpoints_from_lease

        found = tcp_endpoints_from_lease(self._lease_reader)
        if found is None:
            return
        retry = self._refused_at is not None and time.monotonic() - self._refused_at >= REFUSED_RETRY_S
        if found == self._tcp and not retry:
            return
        assert self._keys is not None
        if self._tcp is not None:
            self._sub.close(linger=0)
            self._sub = self._new_sub()
        if self._monitor is not None:
            self._monitor.close(linger=0)
        self._sub.setsockopt(zmq.CURVE_SERVERKEY, found.server_key.encode("ascii"))
        self._sub.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public.encode("ascii"))
        self._sub.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret.encode("ascii"))
        self._monitor = self._sub.get_monitor_socket(_TCP_EVENTS)
        self._sub.connect(found.pub)
        if found != self._tcp:
            log.info("watcher of %s: subscribed to %s over TCP", self.db_path, found.pub)
        self._tcp = found
        self._refused_at = None

    def _on_monitor_events(self) -> None:
        # Imported here, on TCP only: zmq.utils.monitor imports asyncio (15-20 ms of CPU),
        # which every process that loads the Reader would otherwise pay at start.
        from zmq.utils.monitor import recv_monitor_message

        assert self._monitor is not None
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = int(event["event"])
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.stats.refused is not None:
                    log.info("watcher of %s: accepted by the writer now", self.db_path)
                self.stats.refused = None
                continue
            where = self._tcp.pub if self._tcp is not None else "?"
            if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # Also what a connection lost mid-handshake reports (a writer killed then), so
                # not taken for a refusal: the writer's own refusal of a key comes as AUTH.
                log.debug("watcher of %s: a handshake with %s failed", self.db_path, where)
                continue
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                why = f"the writer at {where} refused this watcher's key (not on its allow-list?)"
            else:
                why = f"the CURVE handshake with {where} failed (not the writer the lease names?)"
            self._refused_at = time.monotonic()
            if self.stats.refused == why:
                continue  # said already: a retry refused again
            self.stats.refused = why
            log.warning("watcher of %s: %s; only polling the file shows changes", self.db_path, why)
            self._resync(ResyncCause.REFUSED)

    def _check_file(self, now: float) -> None:
        """Each poll interval: follow the lease over TCP, then look at the database."""
        if self._keys is not None and (
            self._tcp is None or self._refused_at is not None or now - self._last_notice > NOTICE_SILENCE_S
        ):
            self._follow_lease()
        self._check_database(now)

    def _check_database(self, now: float) -> None:
        """Each poll interval: the file still the one opened? without a writer, did it change?"""
        if self._conn is None:
            self._open_file()
            if self._conn is not None:
                self._resync(ResyncCause.STARTED)
            return
        if _identity_of(Path(self.db_path)) != self._identity:
            self._open_file()
            self._resync(ResyncCause.FILE_REPLACED)
            return
        version = self._read_data_version()
        signature = self._file_signature()
        self.stats.data_version_polls += 1
        moved = version != self._data_version or signature != self._signature
        self.stats.polling = now - self._last_notice > NOTICE_SILENCE_S
        explained, self._notified = self._notified, False
        if not moved:
            return
        if not explained and self.stats.polling and self._receive(RESUMED_GRACE_MS):
            # Notices queued while this process was stopped (SIGSTOP, a debugger, a machine
            # that slept) arrive after the silence looked long: they, not another program,
            # explain the change, and a gap among them is a MISSED resync of its own.
            self.stats.polling = False
            explained, self._notified = True, False
        # A notice since the last look explains the move (a change by another program while
        # a writer runs is flagged FOREIGN in the writer's next notice). Unexplained, it waits
        # until a notice comes or the silence says no writer runs: then it is another program's.
        if explained or self.stats.polling:
            self._data_version, self._signature = version, signature
        if not explained and self.stats.polling:
            numbered_by = self._cursor[0]
            self._cursor = self._read_cursor()
            # A new feed id: a writer took the lease (a takeover, whose notices this watcher
            # has not heard yet), not another program writing the file.
            new_writer = self._cursor[0] is not None and self._cursor[0] != numbered_by
            self._resync(ResyncCause.NEW_WRITER if new_writer else ResyncCause.OTHER_WRITER)

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            notice = feed.decode_notice(frames)
        except RejectedMessage as exc:
            log.warning("watcher of %s: ignoring a bad feed notice: %s", self.db_path, exc)
            return
        self.stats.notices += 1
        self._last_notice = time.monotonic()
        self._notified = True
        if not self._is_open():
            return  # not started: STARTED comes with the file
        feed_id, last = self._cursor
        if notice.feed_id != feed_id:
            self._cursor = (notice.feed_id, notice.seq)
            self._resync(ResyncCause.NEW_WRITER)
            return
        if notice.seq <= last:
            return  # a commit already in what the caller read (before STARTED), or a duplicate
        self._cursor = (feed_id, notice.seq)
        if notice.seq != last + 1:
            self._resync(ResyncCause.MISSED)
            return
        if notice.flags & feed.Flag.FOREIGN:
            self._resync(ResyncCause.OTHER_WRITER)
            return
        if notice.flags & feed.Flag.OVERFLOW:
            if self._overflow_concerns_us(notice):
                self._resync(ResyncCause.MANY_CHANGES)
            return
        for record in notice.records:
            if self._wanted(record):
                workflow_id = self._workflow_of(record)
                self._put(
                    Change(
                        record.kind, record.id, workflow_id, record.status, notice.seq, notice.committed_at_us
                    )
                )

    def _overflow_concerns_us(self, notice: feed.FeedNotice) -> bool:
        if self.workflow_id is None or notice.workflow_ids is None:
            return True
        return self.workflow_id in notice.workflow_ids

    def _wanted(self, record: feed.Record) -> bool:
        if self.kinds is not None and record.kind not in self.kinds:
            return False
        if self.workflow_id is not None and self._workflow_of(record) != self.workflow_id:
            return False
        if self.instance_id is not None:
            if record.kind is feed.Kind.INSTANCE:
                return record.id == self.instance_id
            return self._instance_of(record) == self.instance_id
        return True

    def _workflow_of(self, record: feed.Record) -> str | None:
        """The record's workflow: from the notice, else looked up (only for what a filter needs)."""
        if record.workflow_id is not None or record.kind not in (feed.Kind.TASK, feed.Kind.TASK_LOG):
            return record.workflow_id
        if self.workflow_id is None:
            return None  # nobody asked: no query on the watcher's thread either
        return self._lookup("SELECT workflow_id FROM task_executions WHERE id = ?", record.id)

    def _instance_of(self, record: feed.Record) -> str | None:
        table = _TABLES.get(record.kind)
        if table is None:
            return None
        return self._lookup(f"SELECT instance_id FROM {table} WHERE id = ?", record.id)

    def _lookup(self, sql: str, record_id: str) -> str | None:
        key = (sql, record_id)
        if key in self._lookups:
            return self._lookups[key]
        try:
            row = self._lookup_row(sql, record_id)
        except LookupFailed as exc:
            log.warning("watcher of %s: could not look up %s: %s", self.db_path, record_id, exc)
            return None  # not remembered: asked again next time
        value = row[0] if row else None
        if len(self._lookups) >= LOOKUPS_KEPT:
            self._lookups.clear()
        self._lookups[key] = value
        return value

    def _lookup_row(self, sql: str, record_id: str) -> tuple[Any, ...] | None:
        """The first row of `sql` (a `?` for the id) on the watcher's own connection; LookupFailed."""
        assert self._conn is not None
        try:
            row: tuple[Any, ...] | None = self._conn.execute(sql, (record_id,)).fetchone()
        except sqlite3.Error as exc:
            raise LookupFailed(str(exc)) from exc
        return row


class LookupFailed(Exception):
    """A watcher's database could not answer a lookup (logged; the record goes unfiltered as unknown)."""


_TABLES = {
    feed.Kind.WORKFLOW: "workflow_executions",
    feed.Kind.TASK: "task_executions",
    feed.Kind.TASK_LOG: "task_executions",
    feed.Kind.AUDIT_EVENT: "audit_events",
}


def _identity_of(path: Path) -> tuple[int, int] | None:
    """locations.file_identity, with an unreadable path taken as no file (the thread goes on)."""
    try:
        return locations.file_identity(path)
    except OSError:
        return None
