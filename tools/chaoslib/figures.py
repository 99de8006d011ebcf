"""The figures of the report, computed from what the run recorded; no I/O.

The other program's waits (inside and outside the faults), the writers' batch commits (longest,
mean, a p99.9 bound or histogram quantile), the WAL's peak against the writer's restart point,
each writer's RSS and whether it grows, and all of that per window of time (the series).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import other_writer

from see_persistence.writer.checkpointer import WAL_RESTART_PAGES

from .faults import Action
from .sampling import Publication, Sample

FAULT_SETTLE_S = 1.0  # this long after a fault ends, writes of the other program still count as in it
RSS_MIN_LIFE_S = 60.0  # a writer that lived shorter than this says nothing about growth
RSS_GROWTH_TOLERANCE_BYTES = 4 * 1024 * 1024
RSS_GROWTH_TOLERANCE_FRACTION = 0.05
# Counters a writer may publish beyond commit_us_max/commit_us_mean; read when present.
HOLD_US_MAX = "writer.hold_us_max"  # longest time the write lock was held, per publication
LOCK_WAIT_US_MAX = "writer.lock_wait_us_max"  # longest BEGIN IMMEDIATE wait, per publication
# writer.<family>_bucket_<upper µs, or inf>: lifetime counts of batch commits (commit_us)
# and of write-lock holds (hold_us) no longer than that upper bound and longer than the one below.
HISTOGRAMS = ("commit_us", "hold_us")


def spread(values: list[float]) -> dict[str, float | None]:
    """min, median and max of `values` (None when empty)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fault_windows(actions: list[Action]) -> list[tuple[float, float]]:
    """(from, to) seconds since go of each fault, to its takeover and FAULT_SETTLE_S beyond."""
    return [(a.at_s, (a.until_s if a.until_s is not None else a.at_s) + FAULT_SETTLE_S) for a in actions]


def other_program_figures(
    writes: list[other_writer.Write], go_at: float, actions: list[Action], interval_s: float
) -> dict[str, Any]:
    """The other program's writes: counts, errors, waits, and waits outside the faults."""
    windows = _fault_windows(actions)

    def in_fault(w: other_writer.Write) -> bool:
        start = w.at - go_at
        end = start + w.wait_ns / 1e9
        return any(start < hi and end > lo for lo, hi in windows)

    outside = [w for w in writes if not in_fault(w)]
    errors = [w for w in writes if not w.ok]
    slowest = sorted(writes, key=lambda w: w.wait_ns, reverse=True)[:3]
    return {
        "interval_s": interval_s,
        "writes": len(writes),
        "errors": len(errors),
        "first_errors": [f"at {w.at - go_at:.1f} s: {w.error[:200]}" for w in errors[:5]],
        "wait_ms": other_writer.wait_ms(w.wait_ns for w in writes),
        "outside_faults": {
            "writes": len(outside),
            "wait_ms": other_writer.wait_ms(w.wait_ns for w in outside),
        },
        "slowest": [
            {"at_s": round(w.at - go_at, 2), "wait_ms": round(w.wait_ns / 1e6, 1), "in_fault": in_fault(w)}
            for w in slowest
        ],
    }


def _deltas(publications: list[Publication]) -> list[tuple[Publication, int, int]]:
    """Each publication with the batches and operations it covers (its totals minus the previous ones)."""
    out: list[tuple[Publication, int, int]] = []
    last: dict[int, tuple[int, int]] = {}  # epoch -> (batches_total, operations_total)
    for p in sorted(publications, key=lambda p: (p.epoch, p.published_us)):
        batches, ops = p.values.get("writer.batches_total", 0), p.values.get("writer.operations_total", 0)
        before = last.get(p.epoch, (0, 0))  # a writer's totals start at zero with its epoch
        out.append((p, max(0, batches - before[0]), max(0, ops - before[1])))
        last[p.epoch] = (batches, ops)
    return sorted(out, key=lambda item: item[0].at_s)


def _p999_bound(rows: list[tuple[int, int, bool]], total: int) -> int | None:
    """An upper bound of the p99.9 batch commit from (interval max, batches, merged) per publication.

    Every commit longer than v lies in an interval whose max exceeds v. So if the batches of
    those intervals (and of every merged one, whose durations are unknown) are at most 0.1 %
    of all, at least 99.9 % of the commits took v or less: p99.9 <= v. The smallest such v.
    """
    if total == 0:
        return None
    budget = 0.001 * total
    excess = sum(batches for _, batches, merged in rows if merged)
    if excess > budget:
        return None
    by_max: Counter[int] = Counter()
    for longest, batches, merged in rows:
        if not merged:
            by_max[longest] += batches
    bound = None
    for value in sorted(by_max, reverse=True):
        if excess > budget:
            break
        bound = value  # the commits above `value` number `excess` at most
        excess += by_max[value]
    return bound


def _histogram_quantile(buckets: dict[str, int], fraction: float) -> tuple[int | None, int]:
    """The upper bound (µs; None for the open bucket) of the bucket holding that quantile, and the count."""
    finite = sorted((int(k), n) for k, n in buckets.items() if k.isdigit())
    ordered = [*finite, (None, buckets.get("inf", 0))]
    total = sum(n for _, n in ordered)
    if total == 0:
        return None, 0
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for upper, n in ordered:
        seen += n
        if seen >= rank:
            return upper, total
    return None, total


def commit_figures(publications: list[Publication]) -> dict[str, Any]:
    """The longest batch commit and the p99.9, from what the writers published."""
    deltas = _deltas(publications)
    total = sum(batches for _, batches, _ in deltas)
    figures: dict[str, Any] = {
        "publications": len(publications),
        "merged_publications": sum(1 for p in publications if p.merged),
        "batches": total,
        "longest_us": None,
        "p999_us_at_most": None,
        "p999_us": None,
        "hold_us_max": None,
        "lock_wait_us_max": None,
    }
    if not deltas:
        return figures
    longest = max(deltas, key=lambda item: item[0].values.get("writer.commit_us_max", 0))[0]
    figures["longest_us"] = longest.values.get("writer.commit_us_max")
    figures["longest_at_s"] = longest.at_s
    figures["longest_epoch"] = longest.epoch
    weighted = sum(p.values.get("writer.commit_us_mean", 0) * batches for p, batches, _ in deltas)
    figures["mean_us"] = round(weighted / total) if total else None
    figures["p999_us_at_most"] = _p999_bound(
        [(p.values.get("writer.commit_us_max", 0), batches, p.merged) for p, batches, _ in deltas], total
    )
    for key, name in (("hold_us_max", HOLD_US_MAX), ("lock_wait_us_max", LOCK_WAIT_US_MAX)):
        seen = [p.values[name] for p in publications if name in p.values]
        figures[key] = max(seen) if seen else None
    # Histograms, if the writers publish them: each writer's last totals, summed over writers
    # (a killed writer's last second is missing from them, as from every total).
    last: dict[int, Publication] = {}
    for p in publications:
        if p.epoch not in last or p.published_us > last[p.epoch].published_us:
            last[p.epoch] = p
    for family in HISTOGRAMS:
        prefix = f"writer.{family}_bucket_"
        buckets: Counter[str] = Counter()
        for p in last.values():
            for name, value in p.values.items():
                if name.startswith(prefix):
                    buckets[name[len(prefix) :].removesuffix("_total")] += value
        if buckets:
            upper, counted = _histogram_quantile(dict(buckets), 0.999)
            key = "p999_us" if family == "commit_us" else "hold_p999_us"
            figures[key] = upper if upper is not None else "beyond the last bucket"
            figures[f"{family}_histogram"] = dict(buckets)
            figures[f"{family}_histogram_count"] = counted
    return figures


def wal_figures(samples: list[Sample], page_size: int | None) -> dict[str, Any]:
    """The WAL's peak length against the writer's restart point; the -wal file's and the database's size.

    The length is in frames (one page each), read from the wal-index: the -wal file itself is
    truncated only down to journal_size_limit after a restart, so its size stays at its peak.
    """
    framed = [s for s in samples if s.wal_frames is not None]
    peak = max(framed, key=lambda s: s.wal_frames or 0, default=None)
    return {
        "peak_frames": peak.wal_frames if peak else None,
        "peak_bytes": (peak.wal_frames or 0) * page_size if peak and page_size else None,
        "peak_at_s": peak.at_s if peak else None,
        "bound_pages": WAL_RESTART_PAGES,
        "bound_bytes": WAL_RESTART_PAGES * page_size if page_size else None,
        "page_size": page_size,
        "samples_over_bound": sum(1 for s in framed if (s.wal_frames or 0) > WAL_RESTART_PAGES),
        "samples": len(framed),
        "file_peak_bytes": max((s.wal_bytes for s in samples), default=None),
        "db_bytes_end": samples[-1].db_bytes if samples else None,
        "db_bytes_peak": max((s.db_bytes for s in samples), default=None),
    }


def rss_figures(samples: list[Sample]) -> dict[str, Any]:
    """The lease holder's RSS per writer, and whether a long-lived writer's grows."""
    by_pid: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.pid is not None and sample.rss is not None:
            by_pid.setdefault(sample.pid, []).append(sample)
    writers = []
    for pid, points in by_pid.items():
        rss = [p.rss for p in points if p.rss is not None]
        life = points[-1].at_s - points[0].at_s
        entry: dict[str, Any] = {
            "pid": pid,
            "epoch": points[0].epoch,
            "from_s": points[0].at_s,
            "to_s": points[-1].at_s,
            "samples": len(points),
            "min_mb": round(min(rss) / 2**20, 1),
            "max_mb": round(max(rss) / 2**20, 1),
            "verdict": "too short",
        }
        if life >= RSS_MIN_LIFE_S and len(rss) >= 9:
            third = len(rss) // 3
            first, last = statistics.median(rss[:third]), statistics.median(rss[-third:])
            tolerance = max(RSS_GROWTH_TOLERANCE_BYTES, RSS_GROWTH_TOLERANCE_FRACTION * first)
            entry["first_third_mb"] = round(first / 2**20, 1)
            entry["last_third_mb"] = round(last / 2**20, 1)
            entry["growth_mb"] = round((last - first) / 2**20, 1)
            entry["verdict"] = "grows" if last - first > tolerance else "flat"
        writers.append(entry)
    judged = [w for w in writers if w["verdict"] != "too short"]
    verdict = (
        "grows"
        if any(w["verdict"] == "grows" for w in judged)
        else ("flat" if judged else f"not judged: no writer held the lease {RSS_MIN_LIFE_S:.0f} s")
    )
    longest = max(writers, key=lambda w: w["to_s"] - w["from_s"], default=None)
    return {
        "peak_mb": max((w["max_mb"] for w in writers), default=None),
        "verdict": verdict,
        "longest_lived": longest,
        "writers": writers,
    }


def series(
    samples: list[Sample],
    publications: list[Publication],
    writes: list[other_writer.Write],
    go_at: float,
    window_s: float,
    duration_s: float,
) -> list[dict[str, Any]]:
    """Per window of `window_s`: committed ops/s, WAL peak, longest commit, the other program's
    waits, and each writer's RSS range."""
    windows = max(1, math.ceil(duration_s / window_s))
    deltas = _deltas(publications)
    out = []
    for i in range(windows):
        lo, hi = i * window_s, (i + 1) * window_s
        last = i == windows - 1  # the last window takes whatever comes after (flushing, stopping)
        inside = [s for s in samples if lo <= s.at_s < hi or (last and s.at_s >= hi)]
        pubs = [(p, b, o) for p, b, o in deltas if lo <= p.at_s < hi or (last and p.at_s >= hi)]
        waits = [w for w in writes if lo <= w.at - go_at < hi or (last and w.at - go_at >= hi)]
        rss: dict[int, list[int]] = {}
        for s in inside:
            if s.pid is not None and s.rss is not None:
                rss.setdefault(s.pid, []).append(s.rss)
        out.append(
            {
                "from_s": lo,
                "committed_ops_per_s": round(sum(o for _, _, o in pubs) / window_s) if pubs else None,
                "wal_max_frames": max((s.wal_frames or 0 for s in inside), default=None),
                "commit_us_max": max(
                    (p.values.get("writer.commit_us_max", 0) for p, _, _ in pubs), default=None
                ),
                "other_writes": len(waits),
                "other_errors": sum(1 for w in waits if not w.ok),
                "other_wait_ms": other_writer.wait_ms(w.wait_ns for w in waits) if waits else None,
                "writers_rss_mb": {
                    str(pid): [round(min(v) / 2**20, 1), round(max(v) / 2**20, 1)] for pid, v in rss.items()
                },
            }
        )
    return out

