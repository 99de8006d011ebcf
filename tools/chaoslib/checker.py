"""The soak's checker: each client's records verified, in a thread, as soon as its process has exited."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from .rundir import RECORD_LISTS, load_manifest, manifest_path
from .verification import Verification, read_only, verify_clients

log = logging.getLogger("see_persistence.chaos")


class Checker(threading.Thread):
    """Soak: checks each client's records as soon as its process has exited, off the supervisor's loop.

    A client that has exited has flushed and closed: every record it asked for is committed
    and final, and none can follow. Checked then, its manifest need not be kept (nor held in
    memory) for an end-of-run check, and its records may be pruned.
    """

    def __init__(self, db: Path, run_dir: Path, keep_manifests: bool) -> None:
        """Check manifests of `run_dir` against `db` as they are submitted."""
        super().__init__(daemon=True, name="chaos-checker")
        self.db = db
        self.run_dir = run_dir
        self.keep_manifests = keep_manifests
        self.total = Verification()
        self.summaries: list[dict[str, Any]] = []  # each manifest without its record lists
        self.missing: list[str] = []
        self.busy_s = 0.0
        self._checked: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()

    def submit(self, label: str) -> None:
        """Check this client's manifest (its process has exited)."""
        self._queue.put(label)

    def checked_labels(self) -> set[str]:
        """The clients checked so far."""
        with self._lock:
            return set(self._checked)

    def finish(self, timeout: float) -> bool:
        """Check what was submitted, then stop; False if that took longer than `timeout`."""
        self._queue.put(None)
        self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        """Check one submitted client after another."""
        while True:
            label = self._queue.get()
            if label is None:
                return
            started = time.monotonic()
            try:
                self._check(label)
            except Exception as exc:  # reported as a discrepancy; the run goes on
                log.exception("checking client %s failed", label)
                with self._lock:
                    self.total.note(f"checking client {label} failed: {exc}")
                self._missing(label)
            self.busy_s += time.monotonic() - started

    def _missing(self, label: str) -> None:
        """Count a client whose records could not be checked (the report says so)."""
        with self._lock:
            self.missing.append(label)
            self._checked.add(label)

    def _check(self, label: str) -> None:
        manifest = load_manifest(self.run_dir, label)
        if manifest is None:
            self._missing(label)
            return
        v = Verification()
        with read_only(self.db) as conn:
            verify_clients(conn, [manifest], v)
        summary = {k: value for k, value in manifest.items() if k not in RECORD_LISTS}
        with self._lock:
            self.total.merge(v)
            self.summaries.append(summary)
            self._checked.add(label)
        if v.clean() and not self.keep_manifests:
            # An hour of manifests would take as much disk as the database.
            manifest_path(self.run_dir, label).unlink()
        log.info(
            "client %s checked: %s", label, "ok" if v.clean() else f"{v.discrepancy_count} discrepancies"
        )

