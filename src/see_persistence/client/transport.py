"""The Client's sockets, owned by its sending thread alone (pyzmq sockets are not thread-safe).

Before it connects, and whenever it connects again, it checks the socket directory as the
writer does (ours, owner-only; socket files ours): in a directory another user controls,
that user could bind the writer's names, read what the Client sends and answer with commit
notices of its own. Refused, it stays unconnected: send() keeps everything in the outbox.

Over TCP (a TcpRoute) there is no directory to check: CURVE does that work. Both sockets are
CURVE clients with this user's key pair and the writer's public key, so only the holder of
the writer's secret can read what is sent or answer with notices, and the writer accepts
only allowed client keys. The endpoints are given once, or read from the lease row each time
the transport connects anew (a writer that took over binds other ports).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from .. import leases, locations
from ..connection import TcpEndpoints
from ..keys import InvalidKey, KeyPair, parse_public_key
from ..locations import Endpoints
from ..protocol import codec
from ..protocol.errors import RejectedMessage

log = logging.getLogger("see_persistence.client")

# Messages (of up to 512 operations) queued inside ZeroMQ. Kept short: what ZeroMQ cannot
# take waits packed in the outbox and leaves in fewer, larger messages once the writer keeps up.
SEND_HIGH_WATER_MARK = 100
CLOSE_LINGER_MS = 200


@dataclass(frozen=True)
class TcpRoute:
    """How a Client reaches a writer over TCP: its own key pair, and where the writer is.

    `fixed` when the caller gave the endpoint; else `resolve` reads it (None: not known yet).
    """

    keys: KeyPair
    fixed: TcpEndpoints | None = None
    resolve: Callable[[], TcpEndpoints | None] | None = None


def tcp_endpoints_from_lease(reader: Any) -> TcpEndpoints | None:
    """The writer's first TCP endpoint pair and key, as its lease row records them; None if none.

    A writer bound to every interface records 0.0.0.0 (or ::): a client on the same host
    connects through the loopback, one on another host through the host the lease names.
    """
    try:
        status = reader.writer_lease()
    except reader.read_errors:  # no file yet, no server now: not known yet
        return None
    if status is None or not status.public_key:
        return None
    try:
        # A corrupt or foreign row must not reach setsockopt: its error would end the sending thread.
        server_key = parse_public_key(status.public_key)
    except InvalidKey:
        log.warning("the lease row's writer key is not a CURVE public key: not connecting over TCP")
        return None
    for pull, pub in status.endpoints:
        if pull.startswith("tcp://") and pub.startswith("tcp://"):
            here = status.host == leases.host_name()
            return TcpEndpoints(
                _reachable(pull, status.host, here), _reachable(pub, status.host, here), server_key
            )
    return None


def _reachable(endpoint: str, host: str, same_host: bool) -> str:
    for wildcard in ("tcp://0.0.0.0:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            target = "127.0.0.1" if same_host else host
            return f"tcp://{target}:{endpoint[len(wildcard) :]}"
    return endpoint


_NO_IPC = Endpoints(pull="", pub="", directory=Path("/nonexistent"))


class _DirectoryStamp(NamedTuple):
    """The socket directory as it was checked: the same directory, still ours and closed."""

    device: int
    inode: int
    uid: int
    mode: int


def _stamp(directory: os.PathLike[str] | str) -> _DirectoryStamp | None:
    try:
        info = os.lstat(directory)
    except OSError:
        return None
    return _DirectoryStamp(info.st_dev, info.st_ino, info.st_uid, info.st_mode)


class ZmqTransport:
    """PUSH to the writer's PULL, SUB to its notices. `send` never waits.

    Raises PermissionError, naming the directory and why, when the socket directory is not
    this user's own (from the constructor, before any socket exists; from reconnect() and
    verify(), which leave it unconnected).
    """

    def __init__(self, context: zmq.Context[Any], endpoints: Endpoints | TcpRoute, instance_id: str) -> None:
        self._context = context
        self._route = endpoints if isinstance(endpoints, TcpRoute) else None
        self._tcp: TcpEndpoints | None = None  # where a TcpRoute leads now
        # Over TCP there are no ipc endpoints; the ipc-only methods are never reached then.
        self._endpoints = endpoints if isinstance(endpoints, Endpoints) else _NO_IPC
        self._topics = (codec.NOTICE_COMMIT_PREFIX + instance_id.encode(), codec.NOTICE_HEARTBEAT)
        self._checked: _DirectoryStamp | None = None
        self.connected = False
        self.push: zmq.Socket[Any]
        self.sub: zmq.Socket[Any]
        self._check()  # before any socket exists: a refused constructor leaves nothing to close
        self._open()

    @property
    def endpoints(self) -> Endpoints | TcpEndpoints | None:
        """The endpoints connected to (or last checked); None over TCP while the writer is unknown."""
        return self._endpoints if self._route is None else self._tcp

    def _check(self) -> None:
        """Make sure the directory is ours and owner-only (creating it if missing); remember it."""
        self.connected = False
        self._checked = None
        if self._route is not None:
            self._tcp = self._route.fixed or (self._route.resolve() if self._route.resolve else None)
            return
        locations.ensure_private_directory(self._endpoints.directory)
        locations.check_socket_files(self._endpoints)
        self._checked = _stamp(self._endpoints.directory)

    def _open(self, *, connect: bool = True) -> None:
        self.push = self._context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, SEND_HIGH_WATER_MARK)
        self.push.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        self.sub = self._context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for topic in self._topics:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        if self._route is not None:
            if self._tcp is None:
                return  # no writer known yet: verify() looks again
            for socket in (self.push, self.sub):
                socket.setsockopt(zmq.CURVE_SERVERKEY, self._tcp.server_key.encode("ascii"))
                socket.setsockopt(zmq.CURVE_PUBLICKEY, self._route.keys.public.encode("ascii"))
                socket.setsockopt(zmq.CURVE_SECRETKEY, self._route.keys.secret.encode("ascii"))
            if connect:
                self.push.connect(self._tcp.pull)
                self.sub.connect(self._tcp.pub)
                self.connected = True
            return
        if connect:
            self.push.connect(self._endpoints.pull)  # queues at once, before any writer exists
            self.sub.connect(self._endpoints.pub)
            self.connected = True

    def send(self, raw: bytes) -> bool:
        """Queue one message; False if ZeroMQ's queue is full or nothing is connected (caller keeps it)."""
        if not self.connected:
            return False
        try:
            # Always copied: zero-copy hands the buffer to pyzmq's garbage-collector thread,
            # which refuses to start during interpreter shutdown, when a forgotten Client
            # sends its last messages. Copying even 4 MiB costs far less than losing them.
            self.push.send(raw, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        return True

    def notices(self) -> list[codec.Notice]:
        """Every notice waiting on the SUB socket."""
        received: list[codec.Notice] = []
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return received
            try:
                received.append(codec.decode_notice(frames))
            except RejectedMessage as exc:
                log.debug("ignored a malformed notice: %s", exc)

    def follow(self, instance_id: str) -> None:
        """Take the notices of `instance_id` from the next (re)connection on."""
        self._topics = (codec.NOTICE_COMMIT_PREFIX + instance_id.encode(), codec.NOTICE_HEARTBEAT)

    def reconnect(self) -> None:
        """Drop both connections and queues, check the directory again, and connect anew.

        The endpoints are derived again from the database path: the socket directory may
        have changed (/run/user/<uid> appeared), or the database's directory was replaced.
        Raises PermissionError if the directory is no longer safe; the transport then stays
        unconnected (send() returns False, notices() is empty) until a reconnect succeeds.
        """
        self.close(linger_ms=0)
        if self._route is None and self._endpoints.database is not None:
            self._endpoints = locations.endpoints_for(self._endpoints.database)
        try:
            self._check()
        except OSError:
            self._open(connect=False)  # sockets to poll and close, connected to nothing
            raise
        self._open()

    def verify(self) -> bool:
        """Cheaply check (two or three lstat calls) that the directory connected through is unchanged.

        ZeroMQ reconnects on its own to whatever binds the path: if the directory was removed
        (a /tmp cleaner) and made again by someone else, that would be them. So when it is no
        longer the directory checked, or a socket file there is not ours, this reconnects
        (returns True) - or raises PermissionError as reconnect() does. False: nothing changed.
        Call it about once a second. Over TCP: connects once the lease names a writer's endpoints.
        """
        if self._route is not None:
            if self.connected or self._route.fixed is not None:
                return False
            self.reconnect()
            return self.connected
        if self.connected and _stamp(self._endpoints.directory) == self._checked:
            try:
                locations.check_socket_files(self._endpoints)
                return False
            except PermissionError:
                pass
        self.reconnect()
        return True

    def close(self, linger_ms: int = CLOSE_LINGER_MS) -> None:
        """Close both sockets, waiting at most `linger_ms` for queued messages to leave."""
        self.connected = False
        self.push.close(linger=linger_ms)
        self.sub.close(linger=0)
