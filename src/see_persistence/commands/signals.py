"""Stopping a long-running command cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopFlag(threading.Event):
    """An event that also makes `fileno()` readable when set: select() it beside other descriptors.

    A command that waits in select() on a watcher's descriptor would not wake for a flag alone
    (PEP 475 resumes the wait after the handler runs), so setting it writes a byte too.
    """

    def __init__(self) -> None:
        super().__init__()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def set(self) -> None:
        """Set the flag and make fileno() readable."""
        super().set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # its buffer is full (already readable) or it was closed

    def fileno(self) -> int:
        """A descriptor that is readable once the flag is set."""
        return self._wake_r.fileno()

    def close(self) -> None:
        """Close the descriptors."""
        self._wake_r.close()
        self._wake_w.close()


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """A flag set by SIGINT or SIGTERM while the block runs; the old handlers come back after."""
    stop = StopFlag()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.close()
