"""The run directory: the files through which the supervisor and its client processes talk.

A client writes `client-<label>.ready` (its instance id) once its Client exists, waits for
`go.json`, touches `client-<label>.recorded` when it stops recording and, once flushed and
closed, writes `client-<label>.manifest.json`: everything it asked for. The other program logs
its writes to OTHER_LOG; the supervisor writes `report.json` at the end.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("see_persistence.chaos")

GO = "go.json"
OTHER_LOG = "other-program.writes.tsv"
REPORT = "report.json"
MANIFEST_GLOB = "client-*.manifest.json"

# The columns of each record list in a manifest, in the order the verification compares them.
WORKFLOW_FIELDS = ["id", "workflow_name", "status", "error_message"]
TASK_FIELDS = [
    "id",
    "workflow_id",
    "task_name",
    "execution_order",
    "status",
    "output",
    "error_message",
    "logs",
]
EVENT_FIELDS = ["id", "event_type", "message", "workflow_id", "task_id"]
RECORD_LISTS = ("workflows", "tasks", "events", "workflow_fields", "task_fields", "event_fields")


def manifest_path(run_dir: Path, label: str) -> Path:
    """Where client `label` writes its manifest."""
    return run_dir / f"client-{label}.manifest.json"


def ready_path(run_dir: Path, label: str) -> Path:
    """Where client `label` writes its instance id once its Client exists."""
    return run_dir / f"client-{label}.ready"


def recorded_path(run_dir: Path, label: str) -> Path:
    """What client `label` touches when it stops recording (a soak then starts its successor)."""
    return run_dir / f"client-{label}.recorded"


def read_go(run_dir: Path) -> dict[str, Any] | None:
    """The supervisor's go (how long to record), or None while it has not said go."""
    try:
        return json.loads((run_dir / GO).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"))
    os.replace(tmp, path)


def load_manifest(run_dir: Path, label: str) -> dict[str, Any] | None:
    """The manifest client `label` wrote; None (logged) if it is missing or unreadable."""
    path = manifest_path(run_dir, label)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError) as exc:
        log.error("no usable manifest %s: %s", path, exc)
        return None


def load_manifests(run_dir: Path, clients: int | list[str]) -> list[dict[str, Any]]:
    """The manifests the clients wrote (a missing one is reported by the report).

    `clients`: their labels, or a count n for the labels c0 ... c(n-1) of a run without a soak.
    """
    labels = [f"c{i}" for i in range(clients)] if isinstance(clients, int) else clients
    manifests = (load_manifest(run_dir, label) for label in labels)
    return [m for m in manifests if m is not None]


def instance_ids(run_dir: Path, labels: list[str]) -> set[str]:
    """The instance id each client wrote into its ready file."""
    ids = set()
    for label in labels:
        try:
            ids.add(ready_path(run_dir, label).read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            continue
    return ids
