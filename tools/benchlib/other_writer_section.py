"""Another program writing the file beside flooding GUIs (issue 13): measured, printed, judged."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

# tools/other_writer.py, "another program": a script of its own, imported for its log reader;
# tools/ is on the path (bench.py puts it there).
import other_writer as other_tool
import wal_index

from .databases import open_raw_read_only, remove_db
from .figures import Latency, Phase, rate_of
from .formatting import fmt_mb, fmt_ns, fmt_rate, fmt_ratio, markdown_table
from .phases import flush_group, run_gui_phase, start_guis
from .processes import Children, WriterProcess
from .settings import SAMPLE_INTERVAL_S, SCRIPT, Settings
from .targets import Target, limit_target
from .workloads import WORKLOAD_TITLES

if TYPE_CHECKING:
    from .results import Results

# Another program writing beside the GUIs (issue 13).
OTHER_WRITER = SCRIPT.with_name("other_writer.py")  # the other program: a script of its own
OTHER_P = 4  # flooding GUIs beside it
OTHER_WORKLOAD = "mix"
OTHER_SECONDS = 20.0  # the phase with the other program: 400 writes at 50 ms, so p99 is not the max
OTHER_QUICK_SECONDS = 1.0  # a smoke run: 20 writes at 50 ms
OTHER_INTERVAL_S = 0.05
OTHER_BUSY_TIMEOUT_S = 30.0
OTHER_START_LEAD_S = 1.0  # the other program's interpreter starts before the phase does
OTHER_EXIT_GRACE_S = OTHER_BUSY_TIMEOUT_S + 15.0  # its last write may wait out its busy timeout
COUNTER_POLL_EVERY = 5  # the writer's counters every 5th WAL sample (0.25 s): each publication seen
TARGET_OTHER_WAIT_P99_NS = 250_000_000
TARGET_OTHER_WAIT_MAX_NS = 1_000_000_000


@dataclass
class OtherWriter:
    """Another program writing beside OTHER_P flooding GUIs: without it, with it, without it again."""

    procs: int = OTHER_P
    workload: str = OTHER_WORKLOAD
    interval_s: float = OTHER_INTERVAL_S
    phases: dict[str, Phase] = field(default_factory=dict)  # "without, before", "with", "without, after"
    wal_peak: dict[str, int | None] = field(default_factory=dict)  # per phase: the WAL's length, frames
    wal_file_peak: dict[str, int | None] = field(default_factory=dict)  # per phase: the -wal file, bytes
    commit_max_us: dict[str, int | None] = field(default_factory=dict)  # per phase: the writer's own figure
    waits: Latency | None = None  # the other program's writes, in the window of the middle phase
    writes: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rows_checked: str = ""
    wal_bound_pages: int | None = None  # WAL_RESTART_PAGES
    page_size: int | None = None
    writer_exit: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


class FileWatcher(threading.Thread):
    """The WAL every SAMPLE_INTERVAL_S, and the longest batch commit the writer publishes.

    The WAL's length is read from the wal-index (tools/wal_index.py): the -wal file is truncated
    only down to journal_size_limit, so its size stays at its high-water mark.
    """

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True, name="file-watcher")
        self.db = db
        self.wal: list[tuple[float, int, int]] = []  # (monotonic, frames, file bytes)
        self.commits: list[
            tuple[float, int]
        ] = []  # (monotonic when seen, commit_us_max of the second before)
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        from see_persistence import Reader

        reader = Reader(self.db)
        wal = Path(f"{self.db}-wal")
        names = ("writer.epoch", "writer.published_at_us", "writer.commit_us_max")
        last: tuple[Any, Any] | None = None
        n = 0
        try:
            while not self._stop_event.wait(SAMPLE_INTERVAL_S):
                now = time.monotonic()
                length = wal_index.read(self.db)
                try:
                    size = wal.stat().st_size
                except FileNotFoundError:
                    size = 0
                self.wal.append((now, length.frames if length is not None else 0, size))
                n += 1
                if n % COUNTER_POLL_EVERY:
                    continue
                try:
                    values = dict(
                        reader.query("SELECT name, value FROM counters WHERE name IN (?, ?, ?)", names)
                    )
                except (FileNotFoundError, sqlite3.Error, ValueError) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    continue
                key = (values.get("writer.epoch"), values.get("writer.published_at_us"))
                if key != last and "writer.commit_us_max" in values:
                    last = key
                    self.commits.append((now, int(values["writer.commit_us_max"])))
        finally:
            reader.close()

    def stop(self) -> None:
        """Stop sampling (bounded join)."""
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=5)

    def wal_peak(self, t0: float, t1: float) -> tuple[int | None, int | None]:
        """The WAL's longest length (frames) and the -wal file's largest size between two monotonic times."""
        inside = [(frames, size) for at, frames, size in self.wal if t0 <= at <= t1]
        return max((f for f, _ in inside), default=None), max((b for _, b in inside), default=None)

    def commit_max(self, t0: float, t1: float) -> int | None:
        """The longest batch commit (µs) of the writer's publications that cover t0 to t1.

        The writer publishes about once a second what the second before held, so a publication
        seen within a second after t0 still covers some time before it: left out.
        """
        return max((us for at, us in self.commits if t0 + 1.0 <= at <= t1 + 1.3), default=None)


def _start_other_program(
    db: Path, log_path: Path, out: IO[bytes], warm: float, stop: float
) -> subprocess.Popen[bytes]:
    """tools/other_writer.py, writing from `warm` to `stop` (monotonic)."""
    return subprocess.Popen(
        [
            sys.executable,
            str(OTHER_WRITER),
            "--db",
            str(db),
            "--log",
            str(log_path),
            "--interval",
            str(OTHER_INTERVAL_S),
            "--busy-timeout",
            str(OTHER_BUSY_TIMEOUT_S),
            "--start-at",
            f"{warm:.6f}",
            "--stop-at",
            f"{stop:.6f}",
        ],
        stdout=out,
        stderr=out,
    )


def _check_other_rows(section: OtherWriter, db: Path, writes: list[other_tool.Write]) -> None:
    """Every row the other program wrote is in the file once, and no row of no instance besides."""
    asked = {w.id for w in writes if w.ok}
    conn = open_raw_read_only(db)
    try:
        # Its rows have no instance (the seed's index on instance_id finds them); the GUIs' all have one.
        rows = [r[0] for r in conn.execute("SELECT id FROM workflow_executions WHERE instance_id IS NULL")]
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    finally:
        conn.close()
    lost, extra = len(asked - set(rows)), len(set(rows) - asked)
    if lost or extra:
        section.rows_checked = (
            f"**{lost} of its {len(asked)} rows missing, {extra} rows of no instance besides**"
        )
    else:
        section.rows_checked = (
            f"all {len(asked)} rows it wrote are there, once, and no others without an instance"
        )
    if dead:
        section.notes.append(f"{dead} dead letters")


def run_other_writer(settings: Settings) -> OtherWriter:
    """OTHER_P GUIs flood one writer on one file: without the other program, with it, without it again."""
    from see_persistence.writer.checkpointer import WAL_RESTART_PAGES

    section = OtherWriter()
    cell_dir = settings.workdir / "other-writer"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    other_log = cell_dir / "other-writes.tsv"
    writer = WriterProcess(db, cell_dir / "writer.log")
    watcher = FileWatcher(db)
    group = Children()
    other: subprocess.Popen[bytes] | None = None

    def phase(name: str, seconds: float, start_at: float | None = None) -> None:
        begun = time.monotonic()
        result, (warm, stop) = run_gui_phase(
            group,
            cell_dir,
            name.replace(", ", "-"),
            "flood",
            seconds,
            settings.warmup,
            cap=settings.flood_cap,
            start_at=start_at,
        )
        section.phases[name] = result
        section.commit_max_us[name] = watcher.commit_max(warm, stop)
        if name == "with" and other is not None:
            try:
                other.wait(timeout=OTHER_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                section.notes.append("the other program did not stop with the phase; killed")
        flush_group(group, section.notes, f"the phase {name!r}")
        section.wal_peak[name], section.wal_file_peak[name] = watcher.wal_peak(begun, time.monotonic())

    try:
        writer.wait_ready()
        watcher.start()
        start_guis(group, cell_dir, "ours", db, OTHER_WORKLOAD, OTHER_P)
        phase("without, before", settings.seconds)
        # The other program writes only in the middle phase's measured window, after its warm-up.
        start = time.monotonic() + OTHER_START_LEAD_S
        warm, stop = start + settings.warmup, start + settings.warmup + settings.other_seconds
        with open(cell_dir / "other-program.log", "wb") as out:
            other = _start_other_program(db, other_log, out, warm, stop)
        phase("with", settings.other_seconds, start_at=start)
        phase("without, after", settings.seconds)
        writes = other_tool.read_log(other_log)
        section.writes = len(writes)
        section.waits = Latency.of([w.wait_ns for w in writes])
        failed = [w for w in writes if not w.ok]
        section.errors = len(failed)
        section.first_errors = [f"at {w.at - warm:.1f} s: {w.error[:200]}" for w in failed[:3]]
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
        section.writer_exit = writer.stop()
        _check_other_rows(section, db, writes)
        if watcher.error:
            section.notes.append(f"the writer's counters could not always be read: {watcher.error}")
    finally:
        group.close()
        watcher.stop()
        if other is not None and other.poll() is None:
            other.kill()
            other.wait(timeout=10)
        writer.kill()
    conn = open_raw_read_only(db)
    try:
        section.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    section.wal_bound_pages = WAL_RESTART_PAGES
    remove_db(db)
    return section


OTHER_HEADER = f"## Another program writing beside {OTHER_P} flooding GUIs"


def fmt_pages(pages: int | None, page_size: int | None) -> str:
    """Pages, and the MB of their contents."""
    if pages is None:
        return "n/a"
    return f"{pages:,} pages" + (f" ({fmt_mb(pages * page_size)})" if page_size else "")


def section_lines(results: Results) -> list[str]:
    """The GUIs' rows/s without, with and without the other program; its write waits; the WAL."""
    section = results.other_writer
    out = [OTHER_HEADER, ""]
    if section is None:
        return [*out, "not measured", ""]
    s = results.settings
    out += [
        f"{section.procs} GUI processes flood one writer ({WORKLOAD_TITLES[section.workload]}; each pauses"
        f" while {s.flood_cap:,} of its operations wait, as above) on one fresh file, three times in"
        " a row: without another program, with it, and without it again. The other program"
        " (`tools/other_writer.py`) is what the app's Rust core or a user's script would be: plain"
        f" `sqlite3.connect(db, timeout={OTHER_BUSY_TIMEOUT_S:g})` in autocommit, inserting one workflow"
        f" every {section.interval_s * 1000:g} ms with the seed's column values, during the middle phase's"
        f" {s.other_seconds:g} s window (after {s.warmup:g} s of warm-up). Its wait is the time from its"
        " call to its return. It keeps a fixed schedule: a write that returns late is followed by the"
        " next at once and the slots it missed are skipped, so fewer writes than the window has slots"
        " means they waited.",
        "",
    ]
    if section.error:
        out += [f"**failed:** {section.error}", ""]
    rates = {name: phase.rate for name, phase in section.phases.items()}
    without = [rates[k] for k in ("without, before", "without, after") if rates.get(k)]
    baseline = sum(without) / len(without) if without else None
    out += ["### The GUIs' committed rows/s", ""]
    rows = []
    for name, title in (
        ("without, before", "without the other program"),
        ("with", "with the other program writing"),
        ("without, after", "without it, again"),
    ):
        phase = section.phases.get(name)
        commit_us = section.commit_max_us.get(name)
        rows.append(
            [
                title,
                f"{phase.window_s:.1f} s" if phase else "n/a",
                fmt_rate(phase.rate if phase else None),
                fmt_ratio(phase.rate if phase else None, baseline),
                fmt_pages(section.wal_peak.get(name), section.page_size),
                fmt_mb(section.wal_file_peak.get(name)),
                fmt_ns(None if commit_us is None else commit_us * 1000),
            ]
        )
    out += markdown_table(
        [
            "phase",
            "window",
            "committed rows/s",
            "÷ without (mean of both)",
            "WAL peak",
            "-wal file peak",
            "writer's longest batch commit",
        ],
        rows,
    )
    same = rate_of(results.cells.get((section.workload, "ours", section.procs)))
    if same is not None:
        out += [
            f"The {section.workload} table's see-persistence flood at P={section.procs} (its own writer and"
            f" file, in this run): {fmt_rate(same)} rows/s; this section's without-phases ÷ it:"
            f" {fmt_ratio(baseline, same)}.",
            "",
        ]
    out += [
        "WAL peak: the WAL's longest length, in pages (frames), read from the wal-index header in"
        " `-shm` every 50 ms from the phase's start to the end of its flush; the `-wal` file itself keeps"
        " its largest size until a checkpoint truncates it to `journal_size_limit`. The writer's longest"
        " batch commit: the largest `writer.commit_us_max` it published during the phase (BEGIN"
        " IMMEDIATE to COMMIT, the wait for the write lock included).",
        "",
    ]
    out += ["### The other program's writes", ""]
    w = section.waits
    out += markdown_table(
        ["writes", "errors", "p50", "p99", "p99.9", "max", "target p99", "target max"],
        [
            [
                str(section.writes),
                str(section.errors),
                *(fmt_ns(getattr(w, k) if w else None) for k in ("p50", "p99", "p999", "max")),
                f"≤ {fmt_ns(TARGET_OTHER_WAIT_P99_NS)}",
                f"≤ {fmt_ns(TARGET_OTHER_WAIT_MAX_NS)}",
            ]
        ],
    )
    out += [f"- error: {text}" for text in section.first_errors]
    if section.wal_bound_pages is not None:
        peak = section.wal_peak.get("with")
        out += [
            f"- The WAL's bound: `WAL_RESTART_PAGES` of `writer/checkpointer.py`,"
            f" {fmt_pages(section.wal_bound_pages, section.page_size)} at this file's page size"
            f" ({section.page_size} B): where the writer's own checkpoint starts the WAL over. The WAL"
            " passes it by the transaction that crosses it, and by more while a reader or another writer"
            " keeps that checkpoint from finishing. Peak with the other program:"
            f" {fmt_pages(peak, section.page_size)}"
            f" ({fmt_ratio(peak, section.wal_bound_pages)} of the bound).",
        ]
    if section.rows_checked:
        out += [f"- The other program's rows: {section.rows_checked}."]
    out += [f"- {note}" for note in section.notes]
    if section.writer_exit not in (None, 0):
        out += [f"- writer exit code {section.writer_exit}"]
    return [*out, ""]


def section_targets(section: OtherWriter) -> list[Target]:
    """The issue's targets for another program beside OTHER_P flooding GUIs."""
    name = f"another program beside {section.procs} flooding GUIs"
    w = section.waits
    targets = []
    for label, value, limit in (
        ("write wait p99", w.p99 if w else None, TARGET_OTHER_WAIT_P99_NS),
        ("write wait max", w.max if w else None, TARGET_OTHER_WAIT_MAX_NS),
    ):
        targets.append(limit_target(f"{name}: {label} ≤ {fmt_ns(limit)}", value, limit, fmt_ns))
    targets.append(
        Target(
            f"{name}: no write fails",
            f"{section.errors} of {section.writes}",
            "0",
            "n/a",
            None if not section.writes else section.errors == 0,
        )
    )
    peak, bound = section.wal_peak.get("with"), section.wal_bound_pages
    targets.append(
        Target(
            f"{name}: WAL peak ≤ its bound (WAL_RESTART_PAGES)",
            fmt_pages(peak, section.page_size),
            fmt_pages(bound, section.page_size),
            fmt_ratio(peak, bound),
            None if peak is None or bound is None else peak <= bound,
        )
    )
    return targets
