"""Who holds SQLite's WAL write lock on a database, read from /proc/locks (Linux).

In WAL mode SQLite's unix VFS takes a POSIX record lock on one byte of the -shm file for a
write transaction (WAL_WRITE_LOCK, byte (22 + 8) * 4 = 120 in os_unix.c), and the kernel
lists every such lock with the pid of the process holding it. Reading /proc/locks touches
neither the database nor the -shm file: opening and closing the -shm here would drop every
POSIX lock this process's own SQLite connections hold on it.
"""

from __future__ import annotations

import os
from pathlib import Path

WAL_WRITE_LOCK_BYTE = 120
PROC_LOCKS = "/proc/locks"


# The five read marks (WAL_READ_LOCK(0..4)): a connection inside a read transaction holds one.
WAL_READ_LOCK_BYTES = range(123, 128)


def wal_write_lock_holders(db_path: Path, proc_locks: str = PROC_LOCKS) -> frozenset[int] | None:
    """The pids holding the WAL write lock on `db_path` now (empty: nobody); None if unknown.

    Unknown where /proc/locks is not there (not Linux) or the -shm file is missing.
    """
    return _holders(db_path, "WRITE", range(WAL_WRITE_LOCK_BYTE, WAL_WRITE_LOCK_BYTE + 1), proc_locks)


def wal_reader_pids(db_path: Path, proc_locks: str = PROC_LOCKS) -> frozenset[int] | None:
    """The pids inside a read transaction on `db_path` now (holding a read mark); None if unknown."""
    return _holders(db_path, "READ", WAL_READ_LOCK_BYTES, proc_locks)


def _holders(db_path: Path, kind: str, wanted: range, proc_locks: str) -> frozenset[int] | None:
    try:
        info = os.stat(f"{db_path}-shm")
        with open(proc_locks, encoding="ascii", errors="replace") as locks:
            lines = [line.split() for line in locks.read().splitlines()]
    except OSError:
        return None
    # "1: POSIX  ADVISORY  WRITE 1234 fe:00:2523144 120 120": the kernel's device (major and
    # minor in hex) and the inode. btrfs and overlayfs show there another device than stat()
    # says, so the device is taken from a lock of this process's own on the file (SQLite holds
    # byte 128 of every -shm it has open) when there is one, else the inode alone decides.
    lines = [fields for fields in lines if "->" not in fields[:2]]  # waiters (F_SETLKW) hold nothing
    inode = f":{info.st_ino}"
    own = str(os.getpid())
    devices = {f[5] for f in lines if len(f) >= 8 and f[4] == own and f[5].endswith(inode)}
    holders: set[int] = set()
    for fields in lines:
        if len(fields) < 8 or fields[1] != "POSIX" or fields[3] != kind or not fields[5].endswith(inode):
            continue
        if devices and fields[5] not in devices:
            continue
        try:
            start, end = int(fields[6]), (None if fields[7] == "EOF" else int(fields[7]))
            pid = int(fields[4])
        except ValueError:
            continue
        if start <= wanted[-1] and (end is None or end >= wanted[0]):
            holders.add(pid)
    return frozenset(holders)
