"""What one run does (Settings), where things are, and the deadlines every section shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench.py"  # every child is started as it
ROOT = SCRIPT.parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "BENCHMARKS.md"

# Every 16th turn of a flooding GUI's loop, and first after every 16th wakeup of a paced one,
# the GUI also times a trivial call (CONTROL_DUMPS json.dumps of a small dict, about as long as
# a Client call): the machine's own tail for a call that length, in the same processes at the
# same moments, beside the write call's.
CONTROL_EVERY = 16
CONTROL_DUMPS = 1
CONTROL_SUFFIX = ".control"

READY_TIMEOUT_S = 45.0
PHASE_LEAD_S = 0.15  # commands go out this long before a phase starts
PHASE_GRACE_S = 60.0  # beyond a phase's stop time (a naive call may wait out a 30 s busy timeout)
FLUSH_TIMEOUT_S = 90.0
WRITER_STOP_TIMEOUT_S = 30.0
SAMPLE_INTERVAL_S = 0.05
PROBE_POLL_S = 0.001
FLOOD_BACKLOG_CAP = 10_000  # a flooding GUI pauses (untimed) above this many unconfirmed operations
# --quick: 4 GUIs with 10,000 each queued 40,000 operations in the first 0.1 s; on a loaded machine
# the writer took longer than the whole 0.5 s window to halve that, so no write call fell after the
# warm-up. With 2,000 a GUI floods and pauses several times in a window.
QUICK_FLOOD_BACKLOG_CAP = 2_000
LIGHT_FRACTION = 0.25  # ours only: send -> visible once more, each GUI at this fraction of the peak

# --quick is a smoke run: every section and row, each part as short as still gives a figure.
# Not the phases: a flooding GUI's first commit is confirmed only after the round trip through
# the backlog it queued (0.3-0.4 s here), so a window ending before 0.7 s often confirms nothing
# and the paced phases after it do not run (0.3 s after 0.1 s of warm-up did that to the mix).
QUICK_SECONDS = 0.5
# A paced phase as long as a flood: at 0.25 s, a phase at a quarter of the peak on a loaded
# machine (the suite, 6 workers) once saw no row become visible, and its figures were n/a.
QUICK_PACED_SECONDS = 0.5
QUICK_FLOOR_S = 0.2  # the paced call floor, and each busy floor, measured before the cells
QUICK_READ_WORKFLOWS = 5_000  # every query still finds rows: 250 failed, 250 per instance, 500 with tasks
QUICK_READ_BUDGET_S = 0.1


@dataclass
class Settings:
    """What one run does."""

    procs: list[int]
    seconds: float
    warmup: float
    read_workflows: int
    read_budget_s: float
    materialize_rows: int
    absent_cap: int
    flood_cap: int  # a flooding GUI pauses (untimed) while more of its operations wait unconfirmed
    quick: bool
    workdir: Path
    read_cache: Path | None
    profile_dir: Path | None
    other_seconds: float
    feed_stop_seconds: float
    paced_seconds: float  # each paced phase's window (quick: shorter than the floods')
    postgresql_url: str | None = None  # reads on PostgreSQL: this server, else a throwaway cluster
