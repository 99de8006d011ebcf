"""systemd's notify protocol (Type=notify), with no dependency: datagrams to $NOTIFY_SOCKET.

READY=1 once the writer holds the lease and has bound its sockets, STOPPING=1 when it
begins a clean stop, WATCHDOG=1 every half $WATCHDOG_USEC when systemd asks for it.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("see_persistence.writer")


class SystemdNotifier:
    """Sends state changes to the service manager, if one is listening."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]  # an abstract socket
        elif address.startswith("/"):
            self._address = address
        self.watchdog_interval_s: float | None = None
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if (
            self._address
            and watchdog_usec.isdigit()
            and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        ):
            self.watchdog_interval_s = int(watchdog_usec) / 1e6 / 2
        self._next_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        """True when a service manager gave us a socket to notify."""
        return self._address is not None

    def notify(self, state: str) -> None:
        """Send one state string such as 'READY=1'; a failure is logged, never raised."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as exc:
            log.warning("could not notify the service manager (%s): %s", state, exc)

    def ready(self, status: str) -> None:
        """Tell systemd the writer is serving."""
        self.notify(f"READY=1\nSTATUS={status}")
        self._next_watchdog = time.monotonic()

    def stopping(self) -> None:
        """Tell systemd a clean stop has begun."""
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Keep the watchdog fed, if systemd asked for one (call often; it sends when due)."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now >= self._next_watchdog:
            self.notify("WATCHDOG=1")
            self._next_watchdog = now + self.watchdog_interval_s
