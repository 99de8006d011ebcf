"""Running the sections: every one in a fixed order, or one alone, each bounded and guarded."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TypeVar

from .backends import BY_NAME, SYSTEMS
from .ceiling import run_ceiling
from .feed import FeedSection, run_feed
from .figures import Cell, latency_of, rate_of
from .floors import measure_busy_floors, measure_floor
from .formatting import fmt_ns, fmt_rate
from .other_writer_section import OtherWriter, run_other_writer
from .processes import LoadWatcher
from .reads import Reads, run_reads
from .reads_postgresql import run_reads_postgresql
from .report import versions
from .results import Results
from .settings import QUICK_FLOOR_S, Settings
from .targets import target_p
from .tcp_section import TcpSection, run_tcp
from .workloads import WORKLOADS

log = logging.getLogger("bench")
T = TypeVar("T")


def _guard(label: str, fn: Callable[[], T], make_failed: Callable[[str], T]) -> T:
    """`fn()`, or what `make_failed` makes of the reason it raised (logged, never raised)."""
    log.info("running %s", label)
    t0 = time.monotonic()
    try:
        result = fn()
    except Exception as exc:
        log.exception("%s failed", label)
        return make_failed(
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
    log.info("%s done in %.1f s", label, time.monotonic() - t0)
    return result


def _profile_summary(path: Path, limit: int = 20) -> str:
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    return buffer.getvalue()


def run_all(settings: Settings) -> Results:
    """Every cell, in a fixed order, each bounded and guarded."""
    results = Results(settings)
    results.started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.load_before = os.getloadavg()
    results.versions = versions()  # before the run: src/ may change while it runs
    t0 = time.monotonic()
    watcher = LoadWatcher()
    watcher.start()
    try:
        results.floor = measure_floor(QUICK_FLOOR_S if settings.quick else 2.0)
        busy_floor_s = QUICK_FLOOR_S if settings.quick else 3.0
        results.busy_floors = measure_busy_floors(target_p(settings), busy_floor_s)
        _run_cells(settings, results, watcher)
    finally:
        watcher.stop()
    results.duration_s = time.monotonic() - t0
    results.load_after = os.getloadavg()
    return results


def _failed_cell(system: str, workload: str, procs: int, reason: str) -> Cell:
    return Cell(system, workload, procs, error=reason)


def _run_cells(settings: Settings, results: Results, watcher: LoadWatcher) -> None:
    """The write cells, then the other sections, each section's competing load noted."""
    started = time.monotonic()
    for workload in WORKLOADS:
        results.ceilings[workload] = _guard(
            f"{workload} ceiling",
            partial(run_ceiling, settings, workload),
            partial(_failed_cell, "ceiling", workload, 1),
        )
        for p in settings.procs:
            for system in SYSTEMS:
                cell = results.cells[(workload, system, p)] = _guard(
                    f"{workload} {system} P={p}",
                    partial(BY_NAME[system].run_group, settings, workload, p),
                    partial(_failed_cell, system, workload, p),
                )
                flood = latency_of(cell, "flood")
                log.info(
                    "%s %s P=%d: %s ops/s, call p99 %s",
                    workload,
                    system,
                    p,
                    fmt_rate(rate_of(cell)),
                    fmt_ns(flood.p99 if flood else None),
                )
    load_key = "writes"
    for next_key, measure in SECTIONS:
        now = time.monotonic()
        results.other_load[load_key] = watcher.between(started, now)
        load_key, started = next_key, now
        measure(settings, results)
    results.other_load[load_key] = watcher.between(started, time.monotonic())
    if settings.profile_dir:
        for prof in sorted(settings.profile_dir.glob("writer-*.prof")):
            with contextlib.suppress(Exception):
                results.profiles.append((prof.stem, _profile_summary(prof)))


def _measure_other_writer(settings: Settings, results: Results) -> None:
    results.other_writer = _guard(
        "another program beside flooding GUIs",
        partial(run_other_writer, settings),
        lambda reason: OtherWriter(error=reason),
    )


def _measure_feed(settings: Settings, results: Results) -> None:
    results.feed = _guard(
        "live views (change feed)", partial(run_feed, settings), lambda reason: FeedSection(error=reason)
    )


def _measure_reads(settings: Settings, results: Results) -> None:
    results.reads = _guard(
        "reads", partial(run_reads, settings), lambda reason: Reads(0, 0, 0, 0.0, error=reason)
    )


def _measure_reads_postgresql(settings: Settings, results: Results) -> None:
    results.reads_postgresql = _guard(
        "reads on PostgreSQL",
        partial(run_reads_postgresql, settings),
        lambda reason: Reads(0, 0, 0, 0.0, error=reason, title="Reads on PostgreSQL", baseline="raw psycopg"),
    )


def _measure_tcp(settings: Settings, results: Results) -> None:
    results.tcp = _guard(
        "TCP with CURVE beside ipc", partial(run_tcp, settings), lambda reason: TcpSection(error=reason)
    )


# The sections after the write cells, in order: the key their competing load is noted under.
SECTIONS: tuple[tuple[str, Callable[[Settings, Results], None]], ...] = (
    ("other-writer section", _measure_other_writer),
    ("feed section", _measure_feed),
    ("tcp section", _measure_tcp),
    ("reads", _measure_reads),
)


# Sections run only alone (--only): they need what a full run does not have (a PostgreSQL server).
ALONE_SECTIONS: tuple[tuple[str, Callable[[Settings, Results], None]], ...] = (
    ("reads on PostgreSQL", _measure_reads_postgresql),
)


def run_one_section(settings: Settings, load_key: str) -> Results:
    """One section of SECTIONS (or ALONE_SECTIONS) alone, with its competing load and the versions."""
    measure = dict(SECTIONS + ALONE_SECTIONS)[load_key]
    results = Results(settings)
    results.started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.versions = versions()
    t0 = time.monotonic()
    watcher = LoadWatcher()
    watcher.start()
    try:
        measure(settings, results)
        results.other_load[load_key] = watcher.between(t0, time.monotonic())
    finally:
        watcher.stop()
    results.duration_s = time.monotonic() - t0
    return results


def failed_sections(results: Results) -> list[str]:
    """What could not be measured (each failure is in the report's notes too)."""
    failed = [
        f"{c.workload} {c.system} P={c.procs}"
        for c in [*results.ceilings.values(), *results.cells.values()]
        if c.error
    ]
    if results.other_writer is not None and results.other_writer.error:
        failed.append("another program beside flooding GUIs")
    if results.feed is not None and results.feed.error:
        failed.append("live views (change feed)")
    if results.tcp is not None and results.tcp.error:
        failed.append("TCP with CURVE beside ipc")
    if results.reads is not None and results.reads.error:  # None: a run of another section alone
        failed.append("reads")
    if results.reads_postgresql is not None and results.reads_postgresql.error:
        failed.append("reads on PostgreSQL")
    return failed
