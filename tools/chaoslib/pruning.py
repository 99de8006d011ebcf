"""The soak's pruning: once the file passes its cap, records already checked are deleted as the run goes.

An hour at saturation writes tens of GB; pruning through the product's own retention
(`Client.prune`) keeps the file near its cap and exercises that path under load as well.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from see_persistence import Client, Reader

from .observe import file_size, wait_until

log = logging.getLogger("see_persistence.chaos")

PRUNE_STEP_S = 2.0  # one prune deletes at most this much creation time, so its transaction stays short
PRUNE_MIN_INTERVAL_S = 1.0


class Pruner:
    """Soak: once the file passes its cap, prune records already checked through `Client.prune`.

    The product's own retention, as an app would run it. Each prune moves the cutoff on by at
    most PRUNE_STEP_S of creation time, never past the start of a client not yet checked, and
    waits for the previous one to commit, so no transaction deletes much at once.
    """

    def __init__(self, db: Path, cap_bytes: int) -> None:
        """Prune `db` once it (with its WAL) holds more than `cap_bytes`."""
        self.db = db
        self.cap_bytes = cap_bytes
        self.client: Client | None = None
        self.reader = Reader(db)
        self.cutoff_wall: float | None = None
        self.began_at_s: float | None = None
        self.ids: list[str] = []
        self.pending: str | None = None
        self.last_at = 0.0

    def tick(self, safe_cutoff_wall: float, elapsed_s: float, go_at: float) -> None:
        """Send the next prune if one is due."""
        if self.began_at_s is None:
            if file_size(self.db) + file_size(Path(f"{self.db}-wal")) < self.cap_bytes:
                return
            self.began_at_s = round(elapsed_s, 1)
            self.cutoff_wall = time.time() - elapsed_s  # the go time: nothing older is there
            log.info(
                "the file passed %d MB at %.0f s: pruning checked records", self.cap_bytes >> 20, elapsed_s
            )
        assert self.cutoff_wall is not None
        if self.pending is not None:
            if not self._reported(self.pending):
                return  # the last prune is not done yet
            self.pending = None
        if time.monotonic() - self.last_at < PRUNE_MIN_INTERVAL_S:
            return
        cutoff = min(safe_cutoff_wall, self.cutoff_wall + PRUNE_STEP_S)
        if cutoff <= self.cutoff_wall:
            return
        if self.client is None:
            self.client = Client(self.db)
        self.pending = self.client.prune(max(0.0, time.time() - cutoff))
        self.ids.append(self.pending)
        self.cutoff_wall = cutoff
        self.last_at = time.monotonic()

    @property
    def instance_id(self) -> str | None:
        """The pruning Client's instance, if it was made."""
        return self.client.instance_id if self.client is not None else None

    def close(self, timeout: float) -> bool:
        """Flush the prunes sent and wait for the last one's report (bounded), then close the
        Client; True if all were done. A prune's report commits when its job ends, which can be
        chunks after the request committed (a prune sent while a stopped writer was taken over)."""
        done = True
        if self.client is not None:
            deadline = time.monotonic() + timeout
            done = self.client.flush(timeout)
            pending = self.pending
            if done and pending is not None:
                done = bool(wait_until(lambda: self._reported(pending), deadline - time.monotonic()))
            self.client.close(timeout=5.0)
        self.reader.close()
        return done

    def _reported(self, report_id: str) -> bool:
        try:
            return bool(self.reader.query("SELECT 1 FROM audit_events WHERE id = ?", (report_id,)))
        except (FileNotFoundError, sqlite3.Error):
            return False

