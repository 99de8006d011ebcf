"""Live views (issue 14): the change feed's delivery, its cost to the writer, a stopped watcher, no writer."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .databases import open_raw_read_only, remove_db
from .figures import Cell, Latency, Phase
from .formatting import TIMES, fmt_mb, fmt_ns, fmt_num, fmt_rate, fmt_ratio, markdown_table
from .other_writer_section import OTHER_BUSY_TIMEOUT_S
from .phases import VisibilityProbe, flush_group, parse_timestamp_us, run_gui_phase, start_guis, wall_us
from .processes import BenchError, Child, Children, Sampler, WriterProcess
from .settings import READY_TIMEOUT_S, Settings
from .targets import Target, limit_target, ratio_target
from .workloads import WORKLOAD_TITLES, now_text, uuid4_text

if TYPE_CHECKING:
    from .results import Results

# The change feed (issue 14): watcher processes beside FEED_P GUIs and one writer.
FEED_P = 4
FEED_WORKLOAD = "mix"  # its tasks and workflows carry the writer's stamp (last_updated)
FEED_LIGHT_FRACTION = 0.25  # commit -> delivered with each GUI at this fraction of the peak
FEED_STOP_SECONDS = 60.0  # a watcher stopped with SIGSTOP this long while the GUIs flood
FEED_QUICK_STOP_SECONDS = 1.0  # a smoke run: long enough to stop, resume and catch up; not to fill a queue
FEED_NO_WRITER_CHANGES = 5  # changes by plain sqlite3 with no writer running
FEED_QUICK_NO_WRITER_CHANGES = 3
# The feed's cost: rounds of flooding with 0, 1 and 8 watchers, then 0 once more, so that each
# ratio is taken against the floods without a watcher on either side of it (a 5 s window on a
# 2-core machine drifts by more than the 5 % the target allows; one round proved nothing).
COST_WATCHERS = (0, 1, 8)
FEED_COST_ROUNDS = 3
FEED_QUICK_COST_ROUNDS = 1
FEED_ITEM_BYTES = 1024  # a waiting item, generously (a Change and its strings take about 500 B)
TARGET_FEED_DELIVERED_P99_NS = 5_000_000
TARGET_FEED_COST_RATIO = 0.95
WATCHER_GET_TIMEOUT_S = 0.2  # how often the consumer looks whether it is asked to stop


def watcher_main(args: argparse.Namespace) -> int:
    """A watcher process: `Reader.watch()` taking every item as it comes; JSON commands on stdin.

    Each item is kept with the wall-clock instant the watcher handed it over, so the parent can
    set it beside the instants stored in the records (the Client's call, the writer's stamp).
    """
    from see_persistence import Reader
    from see_persistence.reader.watch import Change

    reader = Reader(Path(args.db))
    watcher = reader.watch()
    # (wall ns when handed over, kind or "resync", record id or cause, status or None,
    #  the writer's commit instant in µs or None)
    deliveries: list[tuple[int, str, str, str | None, int | None]] = []
    last_resync_ns: dict[str, int] = {}
    stop = threading.Event()

    def consume() -> None:
        get, append, now = watcher.get, deliveries.append, time.time_ns
        while not stop.is_set():
            item = get(WATCHER_GET_TIMEOUT_S)
            if item is None:
                continue
            at = now()
            if isinstance(item, Change):
                append((at, item.kind.value, item.id, item.status, item.committed_at_us))
            else:
                append((at, "resync", item.cause.value, None, None))
                last_resync_ns[item.cause.value] = at

    consumer = threading.Thread(target=consume, name="consumer", daemon=True)
    consumer.start()

    def stats() -> dict[str, Any]:
        s = watcher.stats
        return {
            "notices": s.notices,
            "changes": s.changes,
            "resyncs": s.resyncs,
            "by_cause": dict(s.by_cause),
            "overflowed": s.overflowed,
            "polling": s.polling,
            "delivered": len(deliveries),
            "pending": watcher.pending(),
            "last_resync_ns": dict(last_resync_ns),
        }

    # Ready once a notice came: the subscription is live (a SUB connects in the background).
    deadline = time.monotonic() + READY_TIMEOUT_S
    while watcher.stats.notices == 0 or not deliveries:
        if time.monotonic() >= deadline:
            print(json.dumps({"error": "no feed notice within the ready timeout"}), flush=True)
            return 1
        stop.wait(0.01)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "stats":
                print(json.dumps(stats()), flush=True)
            elif cmd["cmd"] == "dump":
                taken = deliveries[int(cmd.get("start", 0)) : len(deliveries)]
                Path(cmd["path"]).write_text(json.dumps(taken), encoding="utf-8")
                print(json.dumps({"dumped": len(taken)}), flush=True)
            elif cmd["cmd"] == "finish":
                print(json.dumps(stats()), flush=True)
                return 0
    finally:
        stop.set()
        consumer.join(timeout=5)
        watcher.close()
        reader.close()
    return 0


@dataclass
class FeedSection:
    """The change feed beside FEED_P GUIs and one writer on one file (issue 14's numbers)."""

    procs: int = FEED_P
    workload: str = FEED_WORKLOAD
    # Rounds of flooding with 0, 1, 8 watcher processes, 0 once more after the last round (named by
    # cost_phase()); then one watcher reading, stopped, reading again.
    phases: dict[str, Phase] = field(default_factory=dict)
    cost_rounds: int = 0
    watchers: dict[str, int] = field(default_factory=dict)  # per phase: watcher processes subscribed
    notices_per_watcher: dict[str, float | None] = field(default_factory=dict)
    writer_cpu: dict[str, float | None] = field(default_factory=dict)
    watchers_cpu: dict[str, float | None] = field(default_factory=dict)  # all watchers together, s/s
    writer_rss_peak: dict[str, int | None] = field(default_factory=dict)
    # Each GUI at FEED_LIGHT_FRACTION of the peak (the mean of the 0-watcher floods).
    light: Phase | None = None
    peak_rate: float | None = None
    machine_busy_light: float | None = None
    commit_to_delivered: Latency | None = None  # the commit instant in the notice -> handed over
    stamp_to_delivered: Latency | None = None  # the writer's stamp before its batch -> handed over
    send_to_delivered: Latency | None = None  # the Client's call -> handed over
    send_to_visible: Latency | None = None  # the Client's call -> a Reader polling every 1 ms saw it
    light_changes: int = 0
    light_resyncs: dict[str, int] = field(default_factory=dict)
    # The watcher stopped with SIGSTOP while the GUIs flood.
    stop_s: float | None = None
    watcher_rss_before: int | None = None
    watcher_rss_peak: int | None = None
    watcher_rss_after: int | None = None
    queue_bound_bytes: int | None = None
    commits_during_stop: int | None = None
    notices_after_stop: int | None = None  # notices it received for the commits since SIGSTOP
    resume_resyncs: dict[str, int] = field(default_factory=dict)
    resumed_in_s: float | None = None  # from SIGCONT until its backlog was drained
    # No writer: a change by plain sqlite3 -> the watcher's Resync.
    no_writer: list[int] = field(default_factory=list)  # ns
    poll_interval_s: float = 0.0
    silence_s: float = 0.0
    writer_exit: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _start_watchers(group: Children, cell_dir: Path, db: Path, count: int, first: int) -> None:
    """`count` watcher processes, each ready once a notice reached it."""
    for i in range(first, first + count):
        group.start(["--role", "watcher", "--db", str(db)], cell_dir / f"watcher-{i}.log")
    deadline = time.monotonic() + READY_TIMEOUT_S + 5 * count
    for child in group.members[-count:]:
        child.recv(deadline)


def _watcher_stats(group: Children) -> list[dict[str, Any]]:
    return group.broadcast(lambda _i: {"cmd": "stats"}, time.monotonic() + 30)


def _finish_watchers(group: Children) -> None:
    group.broadcast(lambda _i: {"cmd": "finish"}, time.monotonic() + 30)
    for child in group.members:
        child.wait_exit(10)
    group.close()
    group.members.clear()


def _commit_seq(db: Path) -> int:
    conn = open_raw_read_only(db)
    try:
        row = conn.execute("SELECT commit_seq FROM writer_lease WHERE id = 1").fetchone()
    finally:
        conn.close()
    return int(row[0] or 0) if row else 0


def _caught_up(watchers: Children, mark: dict[str, Any], mark_seq: int, db: Path) -> bool:
    """The watcher took a notice for every commit since `mark` (or reported a gap) and holds none."""
    s = _watcher_stats(watchers)[0]
    if s["pending"]:
        return False
    if any(s["by_cause"].get(c, 0) > mark["by_cause"].get(c, 0) for c in ("missed", "overflow")):
        return True
    return bool(s["notices"] - mark["notices"] >= _commit_seq(db) - mark_seq)


def _stamps(db: Path, table: str, column: str, ids: Sequence[str]) -> dict[str, int]:
    """Wall µs of `column` for each id of `table`, read back after the phase."""
    found: dict[str, int] = {}
    conn = open_raw_read_only(db)
    try:
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            marks = ",".join("?" * len(chunk))
            for record_id, text in conn.execute(
                f"SELECT id, {column} FROM {table} WHERE id IN ({marks})", chunk
            ):
                if text is not None:
                    found[record_id] = parse_timestamp_us(text)
    finally:
        conn.close()
    return found


def _delivery_latencies(
    section: FeedSection, db: Path, deliveries: list[list[Any]], window: tuple[float, float]
) -> None:
    """Commit -> delivered, writer's stamp -> delivered and send -> delivered, in the window.

    Commit: the instant each notice carries (the writer's wall clock once COMMIT returned). A
    task's or workflow's completion is its last change in the mix, so its `last_updated` is the
    writer's stamp, before it prepared the batch, of the very commit whose change was handed over.
    """
    lo, hi = wall_us(window[0]), wall_us(window[1])
    completed: dict[str, tuple[str, int]] = {}
    events: dict[str, int] = {}
    committed: list[int] = []
    for at_ns, kind, record_id, status, committed_us in deliveries:
        if kind == "resync":
            section.light_resyncs[record_id] = section.light_resyncs.get(record_id, 0) + 1
            continue
        section.light_changes += 1
        if committed_us is not None and lo <= committed_us <= hi:
            committed.append(at_ns - committed_us * 1000)
        if kind in ("workflow", "task") and status == "completed":
            completed[record_id] = (kind, at_ns)
        elif kind == "audit_event":
            events[record_id] = at_ns
    stamped: list[int] = []
    for kind, table in (("workflow", "workflow_executions"), ("task", "task_executions")):
        ids = [i for i, (k, _) in completed.items() if k == kind]
        for record_id, stamp_us in _stamps(db, table, "last_updated", ids).items():
            if lo <= stamp_us <= hi:
                stamped.append(completed[record_id][1] - stamp_us * 1000)
    sent: list[int] = []
    for record_id, call_us in _stamps(db, "audit_events", "timestamp", list(events)).items():
        if lo <= call_us <= hi:
            sent.append(events[record_id] - call_us * 1000)
    section.commit_to_delivered = Latency.of(committed)
    section.stamp_to_delivered = Latency.of(stamped)
    section.send_to_delivered = Latency.of(sent)


def _queue_bound_bytes() -> int:
    """What a stopped watcher may hold: its SUB queue full of the largest notices, and max_pending items.

    The largest notice lists MAX_RECORDS records with ids as long as ours; an item is counted at
    FEED_ITEM_BYTES (a Change and its strings in CPython take about half of that).
    """
    from see_persistence.idgen import new_id
    from see_persistence.protocol import feed
    from see_persistence.reader import watch

    records = tuple(
        feed.Record(feed.Kind.TASK, new_id(), new_id(), "completed") for _ in range(feed.MAX_RECORDS)
    )
    frames = feed.encode_notice(feed.FeedNotice(1, 1, 1, feed.Flag.NONE, records))
    notice_bytes = sum(len(frame) for frame in frames)
    return watch.RECEIVE_HIGH_WATER_MARK * notice_bytes + watch.MAX_PENDING * FEED_ITEM_BYTES


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes `pids` used so far (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _rss(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _plain_sqlite_change(db: Path) -> int:
    """One audit event inserted by plain sqlite3 (no writer runs); wall ns once its COMMIT returned."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=OTHER_BUSY_TIMEOUT_S)
    try:
        conn.execute(
            "INSERT INTO audit_events (id, event_type, message, timestamp, data) VALUES (?, ?, ?, ?, '{}')",
            (uuid4_text(), "bench_plain_sqlite", "a change with no writer running", now_text()),
        )
        return time.time_ns()
    finally:
        conn.close()


def _no_writer_delays(section: FeedSection, db: Path, watcher: Child, changes: int) -> None:
    """With the writer stopped: a change by plain sqlite3 -> the watcher's Resync(OTHER_WRITER)."""
    from see_persistence.reader import watch

    section.poll_interval_s = watch.POLL_INTERVAL_S
    section.silence_s = watch.NOTICE_SILENCE_S

    def stats() -> dict[str, Any]:
        watcher.send({"cmd": "stats"})
        return watcher.recv(time.monotonic() + 30)

    # Polling, and quiet: what the stopping writer left in the file has been reported already.
    settle = 3 * watch.POLL_INTERVAL_S
    seen: list[tuple[float, int]] = []

    def settled() -> bool:
        s = stats()
        seen.append((time.monotonic(), s["delivered"]))
        if not s["polling"]:
            return False
        changed = [at for (at, n), (_, m) in itertools.pairwise(seen) if n != m]
        return seen[-1][0] - max(changed, default=seen[0][0]) >= settle

    _wait_for(settled, watch.NOTICE_SILENCE_S + 20 * settle, "the watcher did not poll a quiet file")
    for _ in range(changes):
        before = stats()["by_cause"].get("other_writer", 0)

        def resynced(before: int = before) -> bool:
            return bool(stats()["by_cause"].get("other_writer", 0) > before)

        committed_ns = _plain_sqlite_change(db)
        _wait_for(
            resynced,
            watch.POLL_INTERVAL_S * 20 + 5,
            "no Resync(OTHER_WRITER) for a change made with no writer running",
        )
        section.no_writer.append(stats()["last_resync_ns"]["other_writer"] - committed_ns)


def run_feed(settings: Settings) -> FeedSection:
    """FEED_P GUIs and one writer on one file, watcher processes subscribed to its change feed.

    In order: rounds of flooding with 0, 1 and 8 watchers, and 0 once more (the feed's cost); each GUI at
    FEED_LIGHT_FRACTION of that peak with one watcher (commit -> delivered); that watcher
    reading, stopped with SIGSTOP, reading again while the GUIs flood; then the writer stopped
    and changes made by plain sqlite3 (the polling fallback).
    """
    section = FeedSection()
    cell_dir = settings.workdir / "feed"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    writer = WriterProcess(db, cell_dir / "writer.log")
    sampler: Sampler | None = None
    group = Children()
    watchers = Children()
    extra = Children()
    started = 0

    def flood(
        name: str,
        seconds: float,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        assert sampler is not None
        before = _watcher_stats(watchers) + _watcher_stats(extra)
        watcher_pids = [child.proc.pid for child in (*watchers.members, *extra.members)]
        cpu_before, cpu_from = _cpu_seconds(watcher_pids), time.monotonic()
        if on_start is not None:
            on_start()
        try:
            result, (warm, stop) = run_gui_phase(
                group, cell_dir, name, "flood", seconds, settings.warmup, cap=settings.flood_cap
            )
        finally:
            if on_end is not None:
                on_end()
        after_flood = time.monotonic()
        if watcher_pids:
            section.watchers_cpu[name] = (_cpu_seconds(watcher_pids) - cpu_before) / (after_flood - cpu_from)
        section.phases[name] = result
        section.watchers[name] = len(before)
        section.writer_cpu[name] = sampler.cpu_fraction(warm, stop)
        section.writer_rss_peak[name] = max(
            (rss for at, _cpu, rss in sampler.samples if warm <= at <= after_flood), default=None
        )
        if on_start is None and before:
            after = _watcher_stats(watchers) + _watcher_stats(extra)
            got = [a["notices"] - b["notices"] for a, b in zip(after, before, strict=True)]
            section.notices_per_watcher[name] = sum(got) / len(got)
        flush_group(group, section.notes, f"the phase {name!r}")

    try:
        writer.wait_ready()
        sampler = Sampler(writer.pid)
        sampler.start()
        start_guis(group, cell_dir, "ours", db, FEED_WORKLOAD, FEED_P)

        # The feed's cost: the same flood with 0, 1 and 8 watcher processes subscribed, in rounds.
        section.cost_rounds = FEED_QUICK_COST_ROUNDS if settings.quick else FEED_COST_ROUNDS
        for round_no in range(1, section.cost_rounds + 1):
            flood(cost_phase(0, round_no), settings.seconds)
            _start_watchers(watchers, cell_dir, db, 1, started)
            started += 1
            flood(cost_phase(1, round_no), settings.seconds)
            _start_watchers(extra, cell_dir, db, 7, started)
            started += 7
            flood(cost_phase(8, round_no), settings.seconds)
            _finish_watchers(extra)
            _finish_watchers(watchers)
        flood(cost_phase(0, section.cost_rounds + 1), settings.seconds)
        section.peak_rate = _mean_rate(section, _no_watcher_phases(section)) or 0.0

        # Commit -> delivered: each GUI at a fraction of that peak, one watcher taking every item.
        _start_watchers(watchers, cell_dir, db, 1, started)
        watcher = watchers.members[0]
        if section.peak_rate > 0:
            mark_stats, mark_seq = _watcher_stats(watchers)[0], _commit_seq(db)
            rate = section.peak_rate * FEED_LIGHT_FRACTION / FEED_P
            probe = VisibilityProbe(db)
            probe.start()
            try:
                section.light, window = run_gui_phase(
                    group, cell_dir, "light", "paced", settings.paced_seconds, settings.warmup / 2, rate=rate
                )
            finally:
                probe.stop()
            probe_cell = Cell("ours", FEED_WORKLOAD, FEED_P)
            section.send_to_visible = probe.latency(*window, probe_cell)
            section.notes += probe_cell.notes
            section.machine_busy_light = sampler.machine_busy(*window)
            flush_group(group, section.notes, "the paced phase")
            # Everything committed is announced by now, or the watcher says it missed it.
            _wait_for(lambda: _caught_up(watchers, mark_stats, mark_seq, db), 60, "the watcher's backlog")
            path = cell_dir / "light-deliveries.json"
            watcher.send({"cmd": "dump", "path": str(path), "start": mark_stats["delivered"]})
            watcher.recv(time.monotonic() + 60)
            _delivery_latencies(section, db, json.loads(path.read_text(encoding="utf-8")), window)
        else:
            section.notes.append(
                "no commit was confirmed inside the floods' windows, so the paced phase did not run"
            )

        # A subscriber that stops reading while the GUIs flood: reading, stopped, reading again.
        watcher_sampler = Sampler(watcher.proc.pid)
        watcher_sampler.start()
        stopped: dict[str, Any] = {}

        def stop_watcher() -> None:
            stopped["stats"] = _watcher_stats(watchers)[0]
            stopped["seq"] = _commit_seq(db)
            section.watcher_rss_before = _rss(watcher.proc.pid)
            stopped["at"] = time.monotonic()
            os.kill(watcher.proc.pid, signal.SIGSTOP)

        def resume_watcher() -> None:
            if "at" in stopped:
                os.kill(watcher.proc.pid, signal.SIGCONT)
                stopped["resumed"] = time.monotonic()

        flood("1 watcher reading", settings.seconds)
        flood("the watcher stopped", settings.feed_stop_seconds, stop_watcher, resume_watcher)
        section.stop_s = stopped["resumed"] - stopped["at"]
        before = stopped["stats"]["by_cause"]
        _wait_for(
            lambda: _caught_up(watchers, stopped["stats"], stopped["seq"], db),
            60,
            "the resumed watcher neither caught up nor reported a Resync",
        )
        section.resumed_in_s = time.monotonic() - stopped["resumed"]
        section.watcher_rss_after = _rss(watcher.proc.pid)
        now_stats = _watcher_stats(watchers)[0]
        section.commits_during_stop = _commit_seq(db) - stopped["seq"]
        section.notices_after_stop = now_stats["notices"] - stopped["stats"]["notices"]
        section.resume_resyncs = {
            cause: n - before.get(cause, 0)
            for cause, n in now_stats["by_cause"].items()
            if n > before.get(cause, 0)
        }
        watcher_sampler.stop()
        section.watcher_rss_peak = watcher_sampler.peak_rss()
        section.queue_bound_bytes = _queue_bound_bytes()
        flood("reading again", settings.seconds)

        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
        sampler.stop()
        section.writer_exit = writer.stop()

        # No writer: the watcher polls the file; a change by plain sqlite3 becomes a Resync.
        changes = FEED_QUICK_NO_WRITER_CHANGES if settings.quick else FEED_NO_WRITER_CHANGES
        _no_writer_delays(section, db, watcher, changes)
        _finish_watchers(watchers)
    finally:
        group.close()
        watchers.close()
        extra.close()
        if sampler is not None:
            sampler.stop()
        writer.kill()
    remove_db(db)
    return section


FEED_HEADER = "## Live views (change feed)"


def cost_phase(watchers: int, round_no: int) -> str:
    """The name of the flood with `watchers` subscribed in round `round_no` (the last 0 is round + 1)."""
    return f"{watchers} watchers, round {round_no}"


def _cost_title(section: FeedSection, name: str) -> str:
    watchers, round_no = _cost_key(name)
    who = "no watcher" if watchers == 0 else f"{watchers} watcher" + ("s" if watchers > 1 else "")
    if round_no > section.cost_rounds:
        return f"after the last round: {who}"
    return f"round {round_no}: {who}"


def _cost_key(name: str) -> tuple[int, int]:
    count, _, round_text = name.partition(" watchers, round ")
    return int(count), int(round_text)


def _cost_phases(section: FeedSection) -> list[str]:
    names = [cost_phase(n, r) for r in range(1, section.cost_rounds + 1) for n in COST_WATCHERS]
    return [*names, cost_phase(0, section.cost_rounds + 1)]


def _no_watcher_phases(section: FeedSection) -> list[str]:
    return [cost_phase(0, r) for r in range(1, section.cost_rounds + 2)]


def _cost_ratio(section: FeedSection, name: str) -> float | None:
    """A flood's rate ÷ the mean of the floods without a watcher that open and close its round."""
    watchers, round_no = _cost_key(name)
    phase = section.phases.get(name)
    if watchers == 0 or phase is None or not phase.rate:
        return None
    base = _mean_rate(section, (cost_phase(0, round_no), cost_phase(0, round_no + 1)))
    return phase.rate / base if base else None


def _median_cost_ratio(section: FeedSection, watchers: int) -> float | None:
    ratios = sorted(
        r
        for r in (_cost_ratio(section, cost_phase(watchers, n)) for n in range(1, section.cost_rounds + 1))
        if r is not None
    )
    if not ratios:
        return None
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


STOP_BASELINE = ("1 watcher reading", "reading again")
FEED_STOP_PHASES = (
    ("1 watcher reading", "the watcher reading"),
    ("the watcher stopped", "the watcher stopped (SIGSTOP)"),
    ("reading again", "the watcher reading again"),
)


def _mean_rate(section: FeedSection, names: Sequence[str]) -> float | None:
    rates = [section.phases[n].rate for n in names if n in section.phases and section.phases[n].rate]
    return sum(rates) / len(rates) if rates else None


def _feed_phase_table(
    section: FeedSection,
    phases: Sequence[tuple[str, str]],
    second: tuple[str, Callable[[str], str]] | None,
    ratio: tuple[str, Callable[[str], str]],
    last: tuple[str, Callable[[str], str]],
) -> list[str]:
    """Flood phases: window, committed rows/s, ÷ the baseline, the writer's CPU, and one more column."""
    rows = []
    for name, title in phases:
        phase = section.phases.get(name)
        rate = phase.rate if phase else None
        rows.append(
            [
                title,
                *([second[1](name)] if second else []),
                f"{phase.window_s:.1f} s" if phase else "n/a",
                fmt_rate(rate),
                ratio[1](name),
                fmt_num(section.writer_cpu.get(name), 2),
                last[1](name),
            ]
        )
    header = ["phase", *([second[0]] if second else []), "window", "committed rows/s", ratio[0]]
    return markdown_table([*header, "writer CPU s/s", last[0]], rows)


def _delivered_lines(section: FeedSection) -> list[str]:
    """Commit -> delivered beside send -> delivered and send -> visible, at a fraction of the peak."""
    out = [f"### Commit → delivered, each GUI at {FEED_LIGHT_FRACTION:g} of the peak rate", ""]
    light = section.light
    rate_text = (
        f"{fmt_rate(light.per_gui_rate)} operations/s per GUI ({FEED_LIGHT_FRACTION:g} of"
        f" {fmt_rate(section.peak_rate)} rows/s, the mean of the floods without a watcher)"
        if light is not None
        else "not run"
    )
    out += [
        f"{rate_text}. Every instant is the wall clock (`time.time_ns()`), which all processes of this"
        " machine read from one kernel clock; delivered is when the watcher's `get()` returned it."
        " Commit is the instant each notice carries: the writer's wall clock once its COMMIT"
        " returned, for every change handed over. The second row starts earlier, at the stamp the"
        " writer takes before it prepares a batch (the `last_updated` it writes), read back for each"
        " task and workflow whose completion the watcher delivered (their last change in the mix):"
        " it adds preparing, applying and committing the batch. The next two rows time the mix's"
        " audit events from the Client call"
        " (their `timestamp`): through the feed, and by a Reader polling every 1 ms (another"
        " process than the GUIs and the writer, as in the write sections), in the same phase.",
        "",
    ]
    rows = []
    for title, latency in (
        ("commit → delivered", section.commit_to_delivered),
        ("writer's stamp before the batch → delivered", section.stamp_to_delivered),
        ("send → delivered by the feed", section.send_to_delivered),
        ("send → visible, polling every 1 ms", section.send_to_visible),
    ):
        rows.append(
            [
                title,
                *(fmt_ns(getattr(latency, k) if latency else None) for k in ("p50", "p99", "p999", "max")),
                str(latency.n if latency else 0),
            ]
        )
    out += markdown_table(["path", "p50", "p99", "p99.9", "max", "samples"], rows)
    resyncs = _causes(section.light_resyncs)
    out += [
        f"The watcher handed over {section.light_changes:,} changes and these resyncs: {resyncs}"
        f" (a commit of more than {_max_records()} records is one Resync, many_changes, whose changes"
        f" are not timed). Cores busy: {fmt_num(section.machine_busy_light, 2)} of {os.cpu_count()}.",
        "",
    ]
    return out


def _flood_lines(section: FeedSection, stop_seconds: float) -> list[str]:
    """The flood phases: rounds with 0, 1 and 8 watchers; then one watcher reading, stopped, reading again."""
    without = _mean_rate(section, STOP_BASELINE)
    medians = ", ".join(
        f"{n} watcher{'s' if n > 1 else ''} {fmt_num(_median_cost_ratio(section, n), 2)}{TIMES}"
        for n in COST_WATCHERS[1:]
    )
    tables = (
        (
            "### The writer's committed rows/s with 0, 1 and 8 watchers",
            [(name, _cost_title(section, name)) for name in _cost_phases(section)],
            ("watchers", lambda name: str(section.watchers.get(name, 0))),
            (
                "÷ no watcher (the floods either side)",
                lambda name: (
                    fmt_num(_cost_ratio(section, name), 2) + TIMES
                    if _cost_ratio(section, name) is not None
                    else "n/a"
                ),
            ),
            (
                "notices per watcher; the watchers' CPU s/s",
                lambda name: (
                    f"{fmt_num(section.notices_per_watcher.get(name))};"
                    f" {fmt_num(section.watchers_cpu.get(name), 3)}"
                ),
            ),
            [
                f"The median ratio of the {section.cost_rounds} round(s), which the targets take: {medians}."
                " With no watcher the writer still describes each batch and sends its notice to the PUB"
                " socket (it has no switch to turn the feed off): the ratios are what subscribers add."
                " The watchers' CPU is the whole phase's, warm-up included, of all its watcher processes"
                f" together: on {os.cpu_count()} cores it is CPU the writer and the GUIs do not get.",
                "",
            ],
        ),
        (
            f"### A watcher stopped for {stop_seconds:g} s while the GUIs flood",
            [*FEED_STOP_PHASES],
            None,
            ("÷ reading (mean of both)", lambda name: _ratio_text(section, name, without)),
            ("writer peak RSS", lambda name: fmt_mb(section.writer_rss_peak.get(name))),
            _stop_notes(section),
        ),
    )
    out: list[str] = []
    for heading, phases, second, ratio, last, notes in tables:
        out += [heading, "", *_feed_phase_table(section, phases, second, ratio, last), *notes]
    return out


def _ratio_text(section: FeedSection, name: str, base: float | None) -> str:
    phase = section.phases.get(name)
    return fmt_ratio(phase.rate if phase else None, base)


def _stop_notes(section: FeedSection) -> list[str]:
    """The stopped watcher's RSS, and what it received and was told once resumed."""
    resumed = _causes(section.resume_resyncs)
    return [
        f"- SIGSTOP to SIGCONT: {fmt_num(section.stop_s)} s. The stopped watcher's RSS:"
        f" {fmt_mb(section.watcher_rss_before)} before, {fmt_mb(section.watcher_rss_peak)} at its peak"
        f" (sampled every 50 ms until it had caught up), {fmt_mb(section.watcher_rss_after)} after;"
        f" what its queues may hold: {fmt_mb(section.queue_bound_bytes)} (`RECEIVE_HIGH_WATER_MARK`"
        " of the largest notices, and `max_pending` items at"
        f" {FEED_ITEM_BYTES} B).",
        f"- The writer committed {_count(section.commits_during_stop)} times from SIGSTOP until the"
        f" watcher had caught up; the watcher received {_count(section.notices_after_stop)} notices"
        f" of them, and handed over these resyncs: {resumed}; caught up"
        f" {fmt_num(section.resumed_in_s, 2)} s after SIGCONT"
        + (
            ": nothing was lost, its queues held every notice (a Resync missed/overflow comes only"
            " past them)."
            if _lost(section) == 0
            else "."
        ),
        "",
    ]


def _no_writer_lines(section: FeedSection) -> list[str]:
    """No writer: changes by plain sqlite3 until the watcher's Resync, beside the poll interval."""
    out = ["### No writer running: the watcher polls the file", ""]
    delays = Latency.of(section.no_writer)
    out += [
        "The writer stopped; the watcher, with no notice for"
        f" {section.silence_s:g} s (`NOTICE_SILENCE_S`), polls `PRAGMA data_version` and the file's size"
        f" every {section.poll_interval_s:g} s (`POLL_INTERVAL_S`). Plain sqlite3 inserts one audit event"
        " at a time; from its COMMIT's return to the watcher handing over Resync(other_writer).",
        "",
    ]
    out += markdown_table(
        ["changes", "p50", "max", "poll interval"],
        [
            [
                str(len(section.no_writer)),
                fmt_ns(delays.p50 if delays else None),
                fmt_ns(delays.max if delays else None),
                fmt_ns(section.poll_interval_s * 1e9),
            ]
        ],
    )
    out += [f"- {note}" for note in section.notes]
    if section.writer_exit not in (None, 0):
        out += [f"- writer exit code {section.writer_exit}"]
    return out


def section_lines(results: Results) -> list[str]:
    """Commit -> delivered, the feed's cost to the writer, a stopped watcher, no writer."""
    section = results.feed
    if section is None:
        return [FEED_HEADER, "", "not measured", ""]
    s = results.settings
    out = [FEED_HEADER, "", *_intro_lines(section, s)]
    if section.error:
        out += [f"**failed:** {section.error}", ""]

    out += _delivered_lines(section)
    out += _flood_lines(section, s.feed_stop_seconds)
    out += _no_writer_lines(section)
    return [*out, ""]


def _intro_lines(section: FeedSection, s: Settings) -> list[str]:
    """What runs, in which order, for how long."""
    return [
        f"{section.procs} GUI processes ({WORKLOAD_TITLES[section.workload]}) and one writer on one fresh"
        " file; each watcher is a process of its own calling `Reader.watch()` with no filter and taking"
        " every item as it comes, as a GUI that redraws at once would. In this order: the GUIs flood"
        " (each pauses while"
        f" {s.flood_cap:,} of its operations wait, as above) with 0, 1 and 8 watchers, in"
        f" {section.cost_rounds} round(s), and with 0 once more; each GUI at {FEED_LIGHT_FRACTION:g} of"
        " that peak with one watcher; the GUIs flood"
        " while that watcher reads, is stopped, and reads again; then the writer stops and plain"
        f" sqlite3 changes the file. Each phase runs {s.seconds:g} s after {s.warmup:g} s of warm-up"
        f" (the stopped one {s.feed_stop_seconds:g} s"
        + (f", the paced one {s.paced_seconds:g} s)." if s.paced_seconds != s.seconds else ")."),
        "",
    ]


def _causes(counts: dict[str, int]) -> str:
    return ", ".join(f"{cause} {n}" for cause, n in sorted(counts.items())) or "none"


def _lost(section: FeedSection) -> int | None:
    """Notices the stopped watcher never received of the commits from SIGSTOP until it caught up."""
    if section.commits_during_stop is None or section.notices_after_stop is None:
        return None
    return max(0, section.commits_during_stop - section.notices_after_stop)


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _max_records() -> int:
    from see_persistence.protocol.feed import MAX_RECORDS

    return MAX_RECORDS


def section_targets(section: FeedSection) -> list[Target]:
    """Issue 14's numbers: commit -> delivered, the feed's cost, a stopped watcher."""
    targets = []
    d = section.commit_to_delivered
    targets.append(
        limit_target(
            f"feed: commit → delivered p99 ≤ {fmt_ns(TARGET_FEED_DELIVERED_P99_NS)}, {section.procs} GUIs at"
            f" {FEED_LIGHT_FRACTION:g} of the peak",
            d.p99 if d else None,
            TARGET_FEED_DELIVERED_P99_NS,
            fmt_ns,
        )
    )
    without = _mean_rate(section, STOP_BASELINE)
    for watchers in COST_WATCHERS[1:]:
        median = _median_cost_ratio(section, watchers)
        label = f"{watchers} watcher{'s' if watchers > 1 else ''}"
        targets.append(
            limit_target(
                f"feed: writer rows/s with {label} ≥ {TARGET_FEED_COST_RATIO:g}{TIMES} without"
                f" (the median of {section.cost_rounds} round(s))",
                median,
                TARGET_FEED_COST_RATIO,
                lambda ratio: f"{ratio:.2f}{TIMES}",
                at_least=True,
            )
        )
    phase = section.phases.get("the watcher stopped")
    targets.append(
        ratio_target(
            f"feed: writer rows/s with a watcher stopped ≥ {TARGET_FEED_COST_RATIO:g}{TIMES} without",
            phase.rate if phase else None,
            without,
            fmt_rate,
            TARGET_FEED_COST_RATIO,
            at_least=True,
        )
    )
    grew = (
        section.watcher_rss_peak - section.watcher_rss_before
        if section.watcher_rss_peak is not None and section.watcher_rss_before is not None
        else None
    )
    bound = section.queue_bound_bytes
    targets.append(
        Target(
            "feed: a stopped watcher's RSS grows ≤ what its queues may hold",
            fmt_mb(grew),
            fmt_mb(bound),
            fmt_ratio(grew, bound),
            None if grew is None or bound is None else grew <= bound,
        )
    )
    lost = _lost(section)
    told = sum(section.resume_resyncs.get(c, 0) for c in ("missed", "overflow"))
    targets.append(
        Target(
            "feed: a resumed watcher reports what it lost as a Resync (missed/overflow), never silence",
            "n/a" if lost is None else f"{lost:,} notices lost, {told} such resyncs",
            "a resync if any was lost",
            "n/a",
            None if lost is None else (told > 0 or lost == 0),
        )
    )
    return targets
