"""What a measurement yields: latency percentiles, one phase of a GUI group, one cell of the write tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PLOT_QUANTILES = tuple(1 - 10 ** (-k / 10) for k in range(3, 41))  # 0.5 ... 0.9999


@dataclass
class Latency:
    """Percentiles of all samples (nearest rank), in nanoseconds."""

    n: int
    p50: int
    p99: int
    p999: int
    max: int
    curve: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def of(cls, samples: Sequence[int]) -> Latency | None:
        """Percentiles of `samples` (None if there are none)."""
        if not samples:
            return None
        ordered = sorted(samples)
        n = len(ordered)

        def q(fraction: float) -> int:
            return int(ordered[min(n - 1, max(0, math.ceil(fraction * n) - 1))])

        return cls(n, q(0.50), q(0.99), q(0.999), int(ordered[-1]), [(f, q(f)) for f in PLOT_QUANTILES])


@dataclass
class Phase:
    """One phase of a group of GUI processes."""

    rate: float  # committed operations per second in the window, summed over the GUI processes
    ops: int
    window_s: float
    gui_cpu_us_per_op: float | None
    latency: Latency | None
    dropped: int = 0
    per_gui_rate: float = 0.0
    ops_per_message: float | None = None
    control: Latency | None = None  # the trivial call timed in the same loop (see CONTROL_EVERY)


@dataclass
class Cell:
    """Everything measured for one system, one workload and one P."""

    system: str
    workload: str
    procs: int
    flood: Phase | None = None
    paced: Phase | None = None
    absent: Phase | None = None
    visible: Latency | None = None
    light: Phase | None = None  # ours only: each GUI at LIGHT_FRACTION of the peak rate
    visible_light: Latency | None = None
    machine_busy_light: float | None = None
    writer_cpu: float | None = None  # CPU seconds per wall second while flooding
    writer_cpu_us_per_op: float | None = None
    writer_cpu_paced: float | None = None  # CPU seconds per wall second at half the peak rate
    machine_busy_paced: float | None = None  # cores busy on the whole machine at half the peak rate
    writer_rss: int | None = None
    writer_rss_hwm: int | None = None
    writer_exit: list[int] = field(default_factory=list)
    bytes_per_unit: float | None = None  # per event (audit), per workflow (mix)
    raw_bytes_per_unit: float | None = None  # the same rows copied into a fresh file
    rows: int = 0
    drain_s: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def phase_of(cell: Cell | None, name: str) -> Phase | None:
    """One phase of a cell by name (flood, paced, light, absent); None if not measured."""
    return getattr(cell, name) if cell is not None else None


def latency_of(cell: Cell | None, name: str) -> Latency | None:
    """The write call latency of one phase of a cell; None if not measured."""
    phase = phase_of(cell, name)
    return phase.latency if phase is not None else None


def rate_of(cell: Cell | None, name: str = "flood") -> float | None:
    """Committed operations per second of one phase of a cell; None if not measured."""
    phase = phase_of(cell, name)
    return phase.rate if phase is not None else None
