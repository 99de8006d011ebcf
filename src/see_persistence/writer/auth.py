"""Who may talk to the writer over TCP: a ZAP handler that accepts only allowed CURVE keys.

libzmq asks the ZAP handler of the socket's context (a REP socket at inproc://zeromq.zap.01,
ZeroMQ RFC 27) about every CURVE handshake, after the client proved it holds the secret of
the key it shows. This one answers 200 only for keys on the allow-list (keys.KeyStore, read
again whenever it changes) and only for the CURVE mechanism; everything else gets 400 and
the connection is closed before a single message reaches the writer's sockets.

libzmq (4.3) asks the handler only about listeners bound with a ZAP domain set, whatever
the mechanism, and pyzmq cannot set the domain back to empty. So every listener of a writer
that listens on TCP gets a domain: TCP_DOMAIN (CURVE, allowed keys only) or IPC_DOMAIN (the
NULL mechanism; the owner-only socket directory is the guard there, as without TCP). The TCP
listeners also have ZAP_ENFORCE_DOMAIN, so that without a handler (not started yet, or gone)
libzmq refuses every peer rather than let any key in. A plaintext peer, or bytes that are no
ZMTP greeting, never get as far as ZAP on a CURVE listener: libzmq drops them in the
handshake; a monitor of the TCP sockets reports those, and they are logged too.

Each refusal is logged once per (peer address, reason), at WARNING, so a flood of bad
handshakes from one place does not flood the log.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from ..keys import KeyStore

log = logging.getLogger("see_persistence.writer")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
TCP_DOMAIN = b"see-persistence-tcp"
IPC_DOMAIN = b"see-persistence-ipc"
POLL_MS = 100  # how often the thread looks at its stop flag
MAX_LOGGED_PEERS = 10_000  # beyond this many (address, reason) pairs, refusals are only counted

_HANDSHAKE_FAILURES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: (
        "handshake failed (cut short: a plaintext peer that hung up first, or a dropped link)"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "not a CURVE handshake (plaintext, or not ZeroMQ at all)",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the allow-list",
}


def secure_server(socket: zmq.Socket[Any], secret_key: str) -> None:
    """Make the listeners bound from now on CURVE servers checked by the ZAP handler.

    libzmq copies a socket's options into each listener when it binds, so an ipc endpoint
    bound before (or after plain_server) keeps the NULL mechanism.
    """
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret_key.encode("ascii"))
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.ZAP_DOMAIN, TCP_DOMAIN)
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def plain_server(socket: zmq.Socket[Any]) -> None:
    """Make the listeners bound from now on plain (for ipc, which the socket directory guards)."""
    socket.setsockopt(zmq.CURVE_SERVER, 0)
    socket.setsockopt(zmq.ZAP_DOMAIN, IPC_DOMAIN)
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 0)


class Authenticator:
    """The ZAP handler and the TCP sockets' monitors, in one thread of the writer's context."""

    def __init__(self, context: zmq.Context[Any], store: KeyStore) -> None:
        self._context = context
        self._store = store
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._monitors: list[str] = []
        self._monitor_lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()
        self.refused = 0
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name="see-persistence-zap", daemon=True)

    def start(self) -> None:
        """Bind the ZAP endpoint (in the thread) and return once it is bound; raises if it cannot be."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def watch(self, socket: zmq.Socket[Any]) -> None:
        """Report the handshake failures of `socket` (call before it binds TCP endpoints)."""
        address = f"inproc://see-persistence-monitor-{id(socket)}"
        socket.monitor(address, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        with self._monitor_lock:
            self._monitors.append(address)

    def stop(self) -> None:
        """End the thread and close its sockets (before the context is terminated)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        zap: zmq.Socket[Any] = self._context.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        monitors: dict[zmq.Socket[Any], str] = {}
        try:
            try:
                zap.bind(ZAP_ENDPOINT)
            except zmq.ZMQError as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            poller = zmq.Poller()
            poller.register(zap, zmq.POLLIN)
            while not self._stop.is_set():
                with self._monitor_lock:
                    pending, self._monitors = self._monitors, []
                for address in pending:
                    monitor = self._context.socket(zmq.PAIR)
                    monitor.setsockopt(zmq.LINGER, 0)
                    monitor.connect(address)
                    monitors[monitor] = address
                    poller.register(monitor, zmq.POLLIN)
                for sock, _ in poller.poll(POLL_MS):
                    if sock is zap:
                        self._answer_or_refuse(zap)
                    else:
                        self._on_monitor_event(sock)
        except Exception:  # never silently: without it every TCP peer is refused
            log.exception("the ZAP handler failed; no TCP client can connect until the writer restarts")
        finally:
            for monitor in monitors:
                monitor.close(linger=0)
            zap.close(linger=0)

    def _answer_or_refuse(self, zap: zmq.Socket[Any]) -> None:
        """Answer one request; one that fails to be judged (an unreadable allow-list) is refused.

        The handler's thread must outlive any one request: once it ends, libzmq refuses every
        TCP peer until the writer restarts. And a REP socket that received must send.
        """
        frames = zap.recv_multipart()
        try:
            self._answer(zap, frames)
        except zmq.ZMQError:
            raise  # the socket itself failed: the thread cannot go on
        except Exception:
            log.exception("the ZAP handler could not judge a TCP handshake: refusing it")
            self.refused += 1
            request_id = frames[1] if len(frames) > 1 else b""
            zap.send_multipart([ZAP_VERSION, request_id, b"500", b"internal error", b"", b""])

    def _answer(self, zap: zmq.Socket[Any], frames: list[bytes]) -> None:
        if len(frames) < 6:
            # Not from libzmq: a REP socket must still answer, or it cannot receive again.
            request_id = frames[1] if len(frames) > 1 else b""
            zap.send_multipart([ZAP_VERSION, request_id, b"400", b"malformed", b"", b""])
            return
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        peer = address.decode("utf-8", "replace") or "?"
        if version != ZAP_VERSION:
            reason = "unknown ZAP version"
        elif domain == IPC_DOMAIN and mechanism == b"NULL":
            zap.send_multipart([ZAP_VERSION, request_id, b"200", b"OK", b"ipc", b""])
            return
        elif domain != TCP_DOMAIN:
            reason = f"unknown ZAP domain {domain!r}"
        elif mechanism != b"CURVE" or len(credentials) != 1:
            reason = f"mechanism {mechanism.decode('ascii', 'replace')} is not CURVE"
        elif not self._store.is_allowed(credentials[0]):
            reason = "client key not on the allow-list"
        else:
            self.accepted += 1
            zap.send_multipart([ZAP_VERSION, request_id, b"200", b"OK", b"client", b""])
            return
        self.refused += 1
        self._log_once(peer, reason)
        zap.send_multipart([ZAP_VERSION, request_id, b"400", reason.encode("utf-8"), b"", b""])

    def _on_monitor_event(self, monitor: zmq.Socket[Any]) -> None:
        # Imported at the first event: zmq.utils.monitor imports asyncio (15-20 ms of CPU),
        # which a writer that never listens on TCP would pay at start for nothing.
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(monitor)
        what = _HANDSHAKE_FAILURES.get(int(event["event"]))
        if what is None:
            return
        self.refused += 1
        # libzmq names the listening endpoint here, not the peer: the peer's address reaches
        # only the ZAP handler, which these peers never got to.
        endpoint = event.get("endpoint", b"")
        where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else str(endpoint)
        self._log_once(f"a peer of {where}", what)

    def _log_once(self, peer: str, reason: str) -> None:
        key = (peer, reason)
        if key in self._logged or len(self._logged) >= MAX_LOGGED_PEERS:
            return
        self._logged.add(key)
        log.warning("refused a TCP connection from %s: %s", peer, reason)
