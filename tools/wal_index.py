"""How long the WAL is now, read from the wal-index header at the start of the -shm file.

The -wal file's size is not the WAL's length: after a checkpoint SQLite starts the WAL over from
the file's beginning and truncates the file only down to journal_size_limit, so the file keeps
its high-water mark. The wal-index header (the first 48 bytes of -shm, then a second copy)
holds mxFrame, the last valid frame: the WAL's length now. Layout: sqlite.org/walformat.html,
"The WAL-Index Header"; its integers are in the host's byte order. Read without any lock, as a
sample: a writer may be updating it, so the larger count of the two copies is taken.

Never closed: closing any descriptor of a file drops every POSIX lock the process holds on it,
SQLite's read locks on -shm included (sqlite.org/howtocorrupt.html, 2.2). The chaos and bench
processes read through SQLite while they sample: a sample that opened and closed -shm let the
writer restart the WAL under their reader, which then read "database disk image is malformed".
Each -shm (by device and inode) is opened once and kept open until the process exits.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

# iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame (the rest is not needed)
HEADER = struct.Struct("=IIIBBHI")
HEADER_COPY_OFFSET = 48
WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24

# (st_dev, st_ino) of each -shm read so far -> its descriptor, never closed (see above).
_OPEN_SHM: dict[tuple[int, int], int] = {}


@dataclass(frozen=True)
class WalLength:
    """The WAL's valid frames and the database's page size."""

    frames: int
    page_size: int

    @property
    def bytes(self) -> int:
        """The bytes of the WAL those frames take (its header included)."""
        return WAL_HEADER_BYTES + self.frames * (self.page_size + FRAME_HEADER_BYTES) if self.frames else 0


def read(db: Path) -> WalLength | None:
    """The WAL's length now, or None if there is no initialized wal-index (no -shm, not WAL)."""
    path = f"{db}-shm"
    try:
        info = os.stat(path)
        key = (info.st_dev, info.st_ino)
        fd = _OPEN_SHM.get(key)
        if fd is None:
            fd = _OPEN_SHM[key] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, 2 * HEADER_COPY_OFFSET, 0)
    except OSError:
        return None
    if len(data) < 2 * HEADER_COPY_OFFSET:
        return None
    first, second = HEADER.unpack_from(data, 0), HEADER.unpack_from(data, HEADER_COPY_OFFSET)
    if not first[3]:  # isInit
        return None
    page_size = 65536 if first[5] == 1 else first[5]  # szPage stores 65536 as 1
    return WalLength(max(first[6], second[6]), page_size)
