"""PID leases: a process named by its pid *and* its create time, checked with psutil.

A pid alone proves nothing (pids are reused); a zombie still "exists" but is dead. Leases
are written and checked with the same rounding, and compared with a small tolerance
because psutil versions differ in how they compute Linux create times.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

import psutil

CREATE_TIME_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is: pid, create time (seconds since the epoch) and host name."""

    pid: int
    create_time: float
    host: str


@lru_cache(maxsize=1)
def host_name() -> str:
    """This machine's host name, as leases record it."""
    return socket.gethostname() or "localhost"


def identity_of(pid: int) -> ProcessIdentity:
    """Return the identity of the running process `pid` (raises psutil.NoSuchProcess)."""
    return ProcessIdentity(pid=pid, create_time=round(psutil.Process(pid).create_time(), 3), host=host_name())


def current_process() -> ProcessIdentity:
    """The identity of the calling process."""
    return identity_of(os.getpid())


def is_alive(pid: int | None, create_time: float | None, host: str | None = None) -> bool:
    """True if the process that took the lease still runs (same pid, same create time).

    A lease from another host cannot be checked from here and counts as alive; a missing
    pid, a zombie, or a pid now worn by a process with another create time counts as dead.
    """
    if pid is None or create_time is None:
        return False
    if host is not None and host != host_name():
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(abs(round(process.create_time(), 3) - create_time) <= CREATE_TIME_TOLERANCE_S)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # it exists; we just may not look at it
