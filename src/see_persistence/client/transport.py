"""The Client's sockets, owned by its sending thread alone (pyzmq sockets are not thread-safe)."""

from __future__ import annotations

import logging
from typing import Any

import zmq

from ..locations import Endpoints
from ..protocol import codec
from ..protocol.errors import RejectedMessage

log = logging.getLogger("see_persistence.client")

# Messages (of up to 512 operations) queued inside ZeroMQ. Kept short: what ZeroMQ cannot
# take waits packed in the outbox and leaves in fewer, larger messages once the writer keeps up.
SEND_HIGH_WATER_MARK = 100
CLOSE_LINGER_MS = 200


class ZmqTransport:
    """PUSH to the writer's PULL, SUB to its notices. `send` never waits."""

    def __init__(self, context: zmq.Context[Any], endpoints: Endpoints, instance_id: str) -> None:
        self._context = context
        self._endpoints = endpoints
        self._topics = (codec.NOTICE_COMMIT_PREFIX + instance_id.encode(), codec.NOTICE_HEARTBEAT)
        self.push: zmq.Socket[Any]
        self.sub: zmq.Socket[Any]
        self._open()

    def _open(self) -> None:
        self.push = self._context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, SEND_HIGH_WATER_MARK)
        self.push.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        self.push.connect(self._endpoints.pull)  # queues at once, before any writer exists
        self.sub = self._context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for topic in self._topics:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(self._endpoints.pub)

    def send(self, raw: bytes) -> bool:
        """Queue one message; False if ZeroMQ's queue is full (the caller keeps it)."""
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

    def reconnect(self) -> None:
        """Drop both connections and queues and connect anew (after a writer change)."""
        self.close(linger_ms=0)
        self._open()

    def close(self, linger_ms: int = CLOSE_LINGER_MS) -> None:
        """Close both sockets, waiting at most `linger_ms` for queued messages to leave."""
        self.push.close(linger=linger_ms)
        self.sub.close(linger=0)
