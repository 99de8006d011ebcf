"""Targets: one line each, a measurement beside its limit, met or not; the write cells' limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .formatting import fmt_ratio, markdown_table
from .settings import Settings

TARGET_P = 4
TARGET_THROUGHPUT_VS_NAIVE = 4.0
TARGET_THROUGHPUT_VS_CEILING = 0.60
TARGET_CALL_P99_NS = 20_000
TARGET_CALL_P999_NS = 200_000
TARGET_CALL_MAX_NS = 5_000_000
TARGET_VISIBLE_P99_NS = 20_000_000
TARGET_WRITER_RSS_BYTES = 60 * 1024 * 1024
TARGET_DISK_RATIO = 1.1


@dataclass
class Target:
    """One target line."""

    name: str
    measured: str
    baseline: str
    ratio: str
    met: bool | None


def ratio_target(
    name: str,
    value: float | None,
    baseline: float | None,
    show: Callable[[float | None], str],
    limit: float,
    *,
    at_least: bool,
) -> Target:
    """A target on value ÷ its baseline measured in the same run: at least (or at most) `limit`."""
    ratio = value / baseline if value is not None and baseline else None
    met = None if ratio is None else (ratio >= limit if at_least else ratio <= limit)
    return Target(name, show(value), show(baseline), fmt_ratio(value, baseline), met)


def limit_target(
    name: str, value: float | None, limit: float, show: Callable[[float], str], *, at_least: bool = False
) -> Target:
    """A target on a figure against a fixed limit: at most (or at least) `limit`; n/a if not measured."""
    if value is None:
        return Target(name, "n/a", show(limit), "n/a", None)
    met = value >= limit if at_least else value <= limit
    return Target(name, show(value), show(limit), fmt_ratio(value, limit), met)


def targets_table(title: str, targets: list[Target]) -> list[str]:
    """A section of targets: each one's measurement beside its limit, met or not."""

    def verdict(target: Target) -> str:
        return "n/a" if target.met is None else ("met" if target.met else "**not met**")

    rows = [[t.name, t.measured, t.baseline, t.ratio, verdict(t)] for t in targets]
    header = ["target", "measured", "baseline / limit", "ratio", "result"]
    return [f"### {title}", "", *markdown_table(header, rows)]


def target_p(settings: Settings) -> int:
    """The P the write targets are judged at: TARGET_P if it ran, else the nearest below (or the least)."""
    if TARGET_P in settings.procs:
        return TARGET_P
    below = [p for p in settings.procs if p <= TARGET_P]
    return max(below) if below else min(settings.procs)
