"""How figures are printed: durations, rates, ratios, sizes, and markdown tables."""

from __future__ import annotations

from collections.abc import Sequence

TIMES = "\N{MULTIPLICATION SIGN}"


def fmt_ns(ns: float | None) -> str:
    """A duration with a readable unit."""
    if ns is None:
        return "n/a"
    if ns < 1_000_000:
        return f"{ns / 1000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def fmt_rate(rate: float | None) -> str:
    """Operations per second with thousands separators."""
    return "n/a" if rate is None else f"{rate:,.0f}"


def fmt_ratio(value: float | None, baseline: float | None) -> str:
    """value ÷ baseline as '1.23x' (with the multiplication sign)."""
    if value is None or baseline is None or baseline == 0:
        return "n/a"
    ratio = value / baseline
    return f"{ratio:.3f}{TIMES}" if ratio < 0.1 else f"{ratio:.2f}{TIMES}"


def fmt_mb(value: float | None) -> str:
    """Bytes as MB."""
    return "n/a" if value is None else f"{value / 1024 / 1024:.1f} MB"


def fmt_bytes(value: float | None) -> str:
    """Bytes with no decimals."""
    return "n/a" if value is None else f"{value:,.0f} B"


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A number with thousands separators and `digits` decimals."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def fmt_cpu(value: float | None) -> str:
    """CPU µs per operation."""
    return "n/a" if value is None else f"{value:.1f} µs"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (header, rule, rows) and the blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]
