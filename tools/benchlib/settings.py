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
LIGHT_FRACTION = 0.25  # ours only: send -> visible once more, each GUI at this fraction of the peak


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
    quick: bool
    workdir: Path
    read_cache: Path | None
    profile_dir: Path | None
    other_seconds: float
    feed_stop_seconds: float
    postgresql_url: str | None = None  # reads on PostgreSQL: this server, else a throwaway cluster
