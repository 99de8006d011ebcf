"""The machine's own floor: a trivial call timed like a Client call, alone and with processes flooding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

from .figures import Latency
from .formatting import fmt_ns


def measure_floor(seconds: float, rate: float = 2000.0) -> Latency | None:
    """json.dumps of a small dict, paced and timed like the GUI calls: what this machine adds by itself."""
    pc = time.perf_counter_ns
    dumps = json.dumps
    samples: list[int] = []
    start = time.monotonic()
    done = 0
    while time.monotonic() < start + seconds:
        due = int((time.monotonic() - start) * rate) + 1
        while done < due:
            t0 = pc()
            dumps({"n": done})
            t1 = pc()
            samples.append(t1 - t0)
            done += 1
        wait = start + done / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    return Latency.of(samples)


_BUSY_FLOOR_CHILD = """
import json, sys, time
from array import array
seconds, out, reps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pc, dumps, samples = time.perf_counter_ns, json.dumps, array("q")
stop = time.monotonic() + seconds
n = 0
while True:
    t0 = pc()
    for _ in range(reps):
        dumps({"n": n})
    samples.append(pc() - t0)
    n += 1
    if n & 63 == 0 and time.monotonic() >= stop:
        break
open(out, "wb").write(samples.tobytes())
"""


# json.dumps calls per timed call: one, and enough to last about as long as a Client call.
BUSY_FLOOR_REPS = (1, 4)


def measure_busy_floor(procs: int, seconds: float, work_dir: Path, reps: int = 1) -> Latency | None:
    """`procs` processes flooding `reps` json.dumps per timed call at once, timed like the GUI
    calls: what sharing this machine's cores alone does to a call's tail (no see-persistence)."""
    paths = [work_dir / f"busy-floor-{reps}-{i}.bin" for i in range(procs)]
    children = [
        subprocess.Popen([sys.executable, "-c", _BUSY_FLOOR_CHILD, str(seconds), str(path), str(reps)])
        for path in paths
    ]
    for child in children:
        child.wait(timeout=seconds + 60)
    samples: list[int] = []
    for path in paths:
        if path.exists():
            chunk = array("q")
            chunk.frombytes(path.read_bytes())
            samples.extend(chunk)
    return Latency.of(samples)


def measure_busy_floors(procs: int, seconds: float) -> list[tuple[int, int, Latency]]:
    """The busy floor for each of BUSY_FLOOR_REPS, one after the other."""
    floors = []
    with tempfile.TemporaryDirectory(prefix="see-bench-floor-") as floor_dir:
        for reps in BUSY_FLOOR_REPS:
            latency = measure_busy_floor(procs, seconds, Path(floor_dir), reps)
            if latency is not None:
                floors.append((procs, reps, latency))
    return floors


def busy_floor_lines(floors: Sequence[tuple[int, int, Latency]]) -> list[str]:
    """The Method lines for the busy floors: one per (processes, calls timed as one)."""
    lines = []
    for procs, reps, f in floors:
        what = "the same call" if reps == 1 else f"{reps} such calls timed as one (as long as a Client call)"
        cpus = os.cpu_count() or 1
        who = f"{procs} processes at once" if procs > 1 else "one process"
        why = " (a process sharing a core is preempted in the middle of some calls)" if procs > cpus else ""
        lines.append(
            f"- {what}, flooded by {who} on these {cpus} CPUs:"
            f" p50 {fmt_ns(f.p50)}, p99 {fmt_ns(f.p99)}, p99.9 {fmt_ns(f.p999)}, max {fmt_ns(f.max)}{why}."
        )
    return lines
