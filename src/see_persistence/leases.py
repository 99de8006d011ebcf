"""PID leases: a process named by its pid *and* its create time, checked with psutil, on the
boot of the machine it ran in.

A pid alone proves nothing (pids are reused); a zombie still "exists" but is dead. Leases
are written and checked with the same rounding, and compared with a small tolerance
because psutil versions differ in how they compute Linux create times.

Which boot a process belongs to is its kernel's boot id (/proc/sys/kernel/random/boot_id),
not its host name: a host name changes while processes run (DHCP, a laptop joining another
network), and a boot id never does. How long a process has been silent is measured on
CLOCK_BOOTTIME, which every process of one boot shares and which no wall-clock step moves
(docs/DESIGN_CLOCKS.md says which clock orders what).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import lru_cache

import psutil

CREATE_TIME_TOLERANCE_S = 0.5
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# FOR TESTS ONLY: seconds added to the wall clock the lease code reads (`wall_clock_us`), so a
# test can run a process whose wall clock was stepped without stepping the machine's. Read
# once, at import; anything that is not a number counts as 0.
WALL_CLOCK_OFFSET_ENV = "SEE_PERSISTENCE_TEST_WALL_CLOCK_OFFSET_S"


def _wall_clock_offset_ns() -> int:
    try:
        return int(float(os.environ.get(WALL_CLOCK_OFFSET_ENV, "0")) * 1_000_000_000)
    except ValueError:
        return 0


_WALL_CLOCK_OFFSET_NS = _wall_clock_offset_ns()
# Linux has CLOCK_BOOTTIME (it counts time suspended); elsewhere CLOCK_MONOTONIC is the
# system-wide clock that no wall-clock step moves.
_HAS_CLOCK_GETTIME = hasattr(time, "clock_gettime_ns")
_BOOT_CLOCK: int = getattr(time, "CLOCK_BOOTTIME", getattr(time, "CLOCK_MONOTONIC", 1))


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is: pid, create time (seconds since the epoch), host name and boot id."""

    pid: int
    create_time: float
    host: str
    boot_id: str | None = None


@lru_cache(maxsize=1)
def host_name() -> str:
    """This machine's host name, as leases record it (for people, and for rows without a boot id)."""
    return socket.gethostname() or "localhost"


@lru_cache(maxsize=1)
def _our_boot_id() -> str | None:
    # Read once: a process never outlives the boot it started in. Where the file does not
    # exist (not Linux) there is no stand-in that is stable for a whole boot: the kernel's
    # boot time in wall-clock seconds (psutil.boot_time) moves with every wall-clock step, so
    # a step would make every live process look like one of another boot. None instead
    # means "compare by host name", as leases did before boot ids.
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def boot_id() -> str | None:
    """This boot of this machine's id (Linux's random boot id), or None where there is none."""
    return _our_boot_id()


def boot_time_ns() -> int:
    """Now on CLOCK_BOOTTIME (CLOCK_MONOTONIC where there is none): ns, comparable within one boot."""
    if _HAS_CLOCK_GETTIME:
        return time.clock_gettime_ns(_BOOT_CLOCK)
    return time.monotonic_ns()  # Windows: QueryPerformanceCounter, one clock for the whole system


def wall_clock_us() -> int:
    """Now on the wall clock, as the lease code reads it: microseconds since the Unix epoch."""
    return (time.time_ns() + _WALL_CLOCK_OFFSET_NS) // 1000


def identity_of(pid: int) -> ProcessIdentity:
    """Return the identity of the running process `pid` (raises psutil.NoSuchProcess)."""
    create_time = round(psutil.Process(pid).create_time(), 3)
    return ProcessIdentity(pid=pid, create_time=create_time, host=host_name(), boot_id=boot_id())


def current_process() -> ProcessIdentity:
    """The identity of the calling process."""
    return identity_of(os.getpid())


def of_this_boot(recorded_boot_id: str | None) -> bool:
    """True if `recorded_boot_id` is known and is this boot's: its processes can be checked here."""
    ours = _our_boot_id()
    return recorded_boot_id is not None and ours is not None and recorded_boot_id == ours


def is_alive(
    pid: int | None, create_time: float | None, host: str | None = None, boot_id: str | None = None
) -> bool:
    """True if the process that took the lease still runs (same pid, same create time, same boot).

    With a boot id recorded (and one here to compare with), the boot decides, whatever the
    host names say: this boot's pid is checked here; a process of another boot is dead. A
    database is used by the processes of one machine only (local disks only, ipc sockets,
    and WAL's shared memory cannot span machines), so another boot id is either a boot of
    this machine before a reboot, under whatever name it had then, or a machine the file
    was copied from: neither's processes can use this file now.

    Without one (rows written before boot ids were recorded, or no boot id on this
    system) the host name decides, as before: a lease from another host cannot be checked
    from here and counts as alive. A missing pid, a zombie, or a pid now worn by a process
    with another create time counts as dead.
    """
    if pid is None or create_time is None:
        return False
    ours = _our_boot_id()
    if boot_id is not None and ours is not None:
        if boot_id != ours:
            return False
    elif host is not None and host != host_name():
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


def silence_s(
    heartbeat_at_us: int, now_us: int, boot_id: str | None = None, heartbeat_boot_ns: int | None = None
) -> float:
    """Seconds since a heartbeat: on CLOCK_BOOTTIME when it was of this boot, else on the wall clock.

    The boot clock is shared by every process of the boot and no wall-clock step moves it;
    it counts time suspended, as a holder's silence (everyone's, then). Older rows, and
    heartbeats of another boot, have only the wall-clock time `heartbeat_at_us` to go by.
    """
    if heartbeat_boot_ns is not None and of_this_boot(boot_id):
        return (boot_time_ns() - heartbeat_boot_ns) / 1e9
    return (now_us - heartbeat_at_us) / 1e6
