"""Running a phase in a group of GUI processes, and the Reader that times send -> visible beside it."""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .figures import Cell, Latency, Phase
from .processes import Children
from .settings import (
    CONTROL_SUFFIX,
    FLUSH_TIMEOUT_S,
    PHASE_GRACE_S,
    PHASE_LEAD_S,
    PROBE_POLL_S,
    READY_TIMEOUT_S,
    Settings,
)


def merge_samples(paths: Sequence[Path], warm_indexes: Sequence[int]) -> list[int]:
    """The samples of each file past its warm-up index, together; the files are removed."""
    merged: list[int] = []
    for path, warm in zip(paths, warm_indexes, strict=True):
        samples = array("q")
        samples.frombytes(path.read_bytes())
        merged.extend(samples[warm:])
        with contextlib.suppress(OSError):
            path.unlink()
    return merged


def run_gui_phase(
    group: Children,
    cell_dir: Path,
    name: str,
    mode: str,
    seconds: float,
    warmup: float,
    *,
    rate: float = 0.0,
    cap: int = 0,
    end_at_cap: bool = False,
    start_at: float | None = None,
) -> tuple[Phase, tuple[float, float]]:
    """Run one phase in every GUI of the group; return it and its (warm, stop) monotonic window.

    `start_at`: the (monotonic) start, when something else must line up with the phase.
    """
    start = start_at if start_at is not None else time.monotonic() + PHASE_LEAD_S
    warm, stop = start + warmup, start + warmup + seconds
    paths = [cell_dir / f"{name}-{i}.lat" for i in range(len(group.members))]

    def command(index: int) -> dict[str, Any]:
        return {
            "cmd": "phase",
            "mode": mode,
            "start": start,
            "warm": warm,
            "stop": stop,
            "rate": rate,
            "cap": cap,
            "end_at_cap": end_at_cap,
            "samples": str(paths[index]),
        }

    answers = group.broadcast(command, stop + PHASE_GRACE_S)
    merged = merge_samples(paths, [a["warm_index"] for a in answers])
    control_paths = [Path(str(path) + CONTROL_SUFFIX) for path in paths]
    present = [path for path in control_paths if path.exists()]
    control = Latency.of(merge_samples(present, [0] * len(present))) if present else None
    total_rate = sum(a["window_committed"] / a["window_s"] for a in answers if a["window_s"] > 0)
    window_ops = sum(a["window_committed"] for a in answers)
    cpu = sum(a["cpu_s"] for a in answers)
    messages = sum(a["window_messages"] for a in answers)
    phase = Phase(
        rate=total_rate,
        ops=sum(a["ops"] for a in answers),
        window_s=max(a["window_s"] for a in answers),
        gui_cpu_us_per_op=(cpu / window_ops * 1e6) if window_ops else None,
        latency=Latency.of(merged),
        dropped=sum(a["dropped"] for a in answers),
        per_gui_rate=rate,
        ops_per_message=sum(a["window_ops"] for a in answers) / messages if messages else None,
        control=control,
    )
    return phase, (warm, stop)


def wall_us(mono: float) -> int:
    """A monotonic instant of this machine as wall-clock microseconds."""
    return int((mono - time.monotonic() + time.time()) * 1_000_000)


def start_guis(
    group: Children,
    cell_dir: Path,
    system: str,
    db: Path | str,
    workload: str,
    procs: int,
    env: Mapping[str, str] | None = None,
) -> None:
    """Start `procs` GUI processes of one system (in `env`, if given) and wait until each is ready.

    `db`: a file's path, or a database URL.
    """
    for i in range(procs):
        group.start(
            ["--role", "gui", "--system", system, "--db", str(db), "--workload", workload],
            cell_dir / f"gui-{i}.log",
            env,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S + 5 * procs
    for child in group.members:
        child.recv(deadline)


def paced_phase(
    settings: Settings,
    group: Children,
    cell_dir: Path,
    db: Path,
    cell: Cell,
    procs: int,
    fraction: float,
    name: str,
) -> tuple[Phase, Latency | None, tuple[float, float]]:
    """Each GUI at `fraction` of the flood's committed rate, with the visibility probe watching."""
    assert cell.flood is not None
    rate = cell.flood.rate * fraction / procs
    probe = VisibilityProbe(db)
    probe.start()
    try:
        phase, window = run_gui_phase(
            group, cell_dir, name, "paced", settings.paced_seconds, settings.warmup / 2, rate=rate
        )
    finally:
        probe.stop()
    return phase, probe.latency(*window, cell), window


def flush_group(group: Children, notes: list[str], after: str) -> None:
    """Flush every GUI of the group; a flush that times out is noted in `notes`."""
    flushed = group.broadcast(
        lambda _i: {"cmd": "flush", "timeout": FLUSH_TIMEOUT_S}, time.monotonic() + FLUSH_TIMEOUT_S + 30
    )
    if not all(a["flushed"] for a in flushed):
        notes.append(f"a flush after {after} timed out")


def parse_timestamp_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 timestamp as the layer stores it."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(value.timestamp() * 1_000_000)


class VisibilityProbe(threading.Thread):
    """A Reader polling for new audit events: when it sees each row, minus when its call was made."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True, name="visibility-probe")
        self.db = db
        self.seen: list[tuple[int, int]] = []  # (wall µs of the call, ns until a Reader saw the row)
        self.polls = 0
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Poll every PROBE_POLL_S until stopped."""
        from see_persistence import Reader

        reader = Reader(self.db)
        try:
            last = reader.query("SELECT COALESCE(MAX(rowid), 0) FROM audit_events")[0][0]
            while not self._stop_event.is_set():
                rows = reader.query(
                    "SELECT rowid, timestamp FROM audit_events WHERE rowid > ? ORDER BY rowid LIMIT 20000",
                    (last,),
                )
                seen_us = time.time_ns() // 1000  # an upper bound: the rows were not there one poll ago
                self.polls += 1
                for _rowid, text in rows:
                    at_us = parse_timestamp_us(text)
                    self.seen.append((at_us, (seen_us - at_us) * 1000))
                if rows:
                    last = rows[-1][0]
                time.sleep(PROBE_POLL_S)
        except Exception as exc:  # reported beside the figure, never raised into the run
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop polling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=5)

    def latency(self, warm: float, stop: float, cell: Cell) -> Latency | None:
        """Percentiles of the rows whose calls were made inside the (monotonic) window."""
        if self.error:
            cell.notes.append(f"visibility probe failed: {self.error}")
        lo, hi = wall_us(warm), wall_us(stop)
        timed = [ns for at_us, ns in self.seen if lo <= at_us <= hi]
        if not timed and not self.error:
            # A short (--quick) phase on a loaded machine can end before any of its rows is
            # visible: the figure is then n/a, and the report says why.
            cell.notes.append(
                f"send → visible: the probe saw none of the rows sent in a {stop - warm:.2f} s window"
            )
        return Latency.of(timed)
