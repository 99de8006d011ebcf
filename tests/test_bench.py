"""Smoke test of tools/bench.py --quick: it runs, exits 0 and writes every section and row.

A smoke test only: no figure is asserted (the benchmark reports, it never asserts, and timings on
a shared machine prove nothing).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench.py"
QUICK_PROCS = ("1", "4")
RUN_TIMEOUT_S = 150.0

WORKLOAD_HEADERS = (
    "## Writes: audit events only",
    "## Writes: workflow mix (38 operations, 16 rows per workflow)",
)
SECTION_HEADERS = (
    "### Committed rows/s",
    "### Write call latency, flooding",
    "### Write call latency, each GUI at a steady half of the peak rate",
    "### Write call latency, writer absent (flooding)",
    "### Send → visible, at half the peak rate",
    "### CPU and memory",
)
REPORT_HEADERS = (
    "# Benchmarks",
    "## Machine",
    "## Versions",
    "## Command",
    "## Method",
    "## Another program writing beside 4 flooding GUIs",
    "## Live views (change feed)",
    "## TCP with CURVE beside ipc",
    "## Reads",
    "### Queries",
    "### Rows materialized as models",
    "### The least that models add",
    "## Targets",
)
READ_QUERIES = (
    "get_workflow(id)",
    "list_workflows(limit=50)",
    "list_workflows(limit=50, status='failed')",
    "list_workflows(limit=50, instance_id=...)",
    "list_workflows(limit=50, status='failed', instance_id=...)",
    "get_workflows_for_instance(id), its default limit=100",
    "get_tasks_for_workflow(id)",
    "get_audit_trail(id)",
)


def _section(text: str, header: str) -> str:
    """The text from `header` up to the next header of the same or a higher level."""
    level = len(header) - len(header.lstrip("#"))
    start = text.index(header)
    pattern = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE)
    match = pattern.search(text, start + len(header))
    return text[start : match.start() if match else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    """The body rows of every markdown table in `section`, as cells."""
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _labels(text: str, header: str) -> list[str]:
    """The first cell of each body row of the tables under `header`, header rows left out."""
    return [row[0] for row in _table_rows(_section(text, header))[1:]]


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_quick_benchmark_writes_every_section_and_row(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--output", str(output), "--log-level", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"bench.py exited {proc.returncode}\n{proc.stderr[-6000:]}"
    report = output.read_text(encoding="utf-8")
    assert "# Benchmarks" in proc.stdout and "## Targets" in proc.stdout  # printed as well as written

    for header in REPORT_HEADERS:
        assert header in report, f"missing {header!r}"
    assert "bench.py --quick" in _section(report, "## Command")
    for name in ("Python", "SQLite", "pyzmq / libzmq", "msgpack", "pydantic"):
        assert f"- {name}: " in _section(report, "## Versions")

    for workload in WORKLOAD_HEADERS:
        body = _section(report, workload)
        for header in SECTION_HEADERS:
            assert header in body, f"{workload}: missing {header!r}"
        assert "### Disk: bytes per" in body
        throughput = _table_rows(_section(body, "### Committed rows/s"))
        assert [row[0] for row in throughput[1:]] == list(QUICK_PROCS)
        for row in throughput[1:]:
            assert all(cell != "n/a" for cell in row), f"{workload}: a figure is missing in {row}"
        latency = _table_rows(_section(body, "### Write call latency, flooding"))
        systems = {(row[0], row[1]) for row in latency[1:]}
        for p in QUICK_PROCS:
            assert (p, "naive, same ids") in systems
            assert (p, "see-persistence") in systems
        # The trivial call timed in the same loops, flooding and paced: a table each. Flooding
        # times one every 16th call, so every cell has a row; a paced GUI times one every 16th
        # wakeup, and a --quick phase on a loaded machine may lag through it in fewer wakeups.
        expected = {(p, s) for p in QUICK_PROCS for s in ("naive, same ids", "see-persistence")}
        for header, every_cell in (("### Write call latency, flooding", True), (SECTION_HEADERS[2], False)):
            rows = _table_rows(_section(body, header))
            tables = [row for row in rows[1:] if row[0] == "P"]
            assert tables and tables[0][2] == "trivial call p50", f"{workload}: no trivial-call table"
            controls = {(row[0], row[1]) for row in rows[rows.index(tables[0]) + 1 :]}
            if every_cell:
                assert controls == expected, f"{workload}, {header}: {controls}"
            else:
                assert controls and controls <= expected, f"{workload}, {header}: {controls}"
        visible = _table_rows(_section(body, "### Send → visible, at half the peak rate"))
        assert visible[0][-3:] == [
            "ours p50 at 0.25 of the peak",
            "ours p99 at 0.25 of the peak",
            "cores busy at 0.25 of the peak",
        ]
        assert [row[0] for row in visible[1:]] == list(QUICK_PROCS)
        # The paced phases run at a fraction of the flood's committed rate; a --quick flood
        # window (0.5 s) on a loaded machine can end before any commit is confirmed, and the
        # report then says so in its notes instead.
        flood_committed = {row[0]: row[3] != "0" for row in throughput[1:]}
        for row in visible[1:]:
            if flood_committed[row[0]]:
                assert "n/a" not in row[3:5] + row[8:10], (
                    f"{workload}: a send → visible figure is missing in {row}"
                )
            else:
                assert "so the paced phases did not run" in _section(report, "## Notes")

    # Another program beside 4 flooding GUIs: the GUIs' rows/s in three phases of one run, the
    # other program's write waits, and its targets (whatever the figures are).
    other = _section(report, "## Another program writing beside 4 flooding GUIs")
    phases = _table_rows(_section(other, "### The GUIs' committed rows/s"))
    assert _labels(other, "### The GUIs' committed rows/s") == [
        "without the other program",
        "with the other program writing",
        "without it, again",
    ]
    assert phases[2][2] != "n/a", f"no rows/s with the other program: {phases[2]}"
    waits = _table_rows(_section(other, "### The other program's writes"))
    assert waits[0][:6] == ["writes", "errors", "p50", "p99", "p99.9", "max"] and len(waits) == 2
    assert int(waits[1][0]) >= 1 and waits[1][2] != "n/a", waits[1]  # its first write at least returned
    assert "The other program's rows: all " in other, other
    assert "WAL_RESTART_PAGES" in other
    other_targets = [
        row for row in _table_rows(_section(report, "## Targets")) if "another program" in row[0]
    ]
    assert len(other_targets) == 4, other_targets

    # Live views: commit -> delivered beside send -> delivered and send -> visible, the writer's
    # rows/s with 0, 1 and 8 watchers, a watcher stopped, the polling fallback; and their targets.
    live = _section(report, "## Live views (change feed)")
    assert _labels(live, "### Commit → delivered, each GUI at 0.25 of the peak rate") == [
        "commit → delivered",
        "writer's stamp before the batch → delivered",
        "send → delivered by the feed",
        "send → visible, polling every 1 ms",
    ]
    cost = _table_rows(_section(live, "### The writer's committed rows/s with 0, 1 and 8 watchers"))
    assert [row[:2] for row in cost[1:]] == [
        ["no watcher", "0"],
        ["1 watcher", "1"],
        ["8 watchers", "8"],
        ["no watcher, again", "0"],
    ]
    assert _labels(live, "### A watcher stopped for 5 s while the GUIs flood") == [
        "the watcher reading",
        "the watcher stopped (SIGSTOP)",
        "the watcher reading again",
    ]
    assert "The stopped watcher's RSS: " in live and "n/a before" not in live, live
    polled = _table_rows(_section(live, "### No writer running: the watcher polls the file"))
    assert polled[0] == ["changes", "p50", "max", "poll interval"] and polled[1][0] == "3", polled
    feed_targets = [row for row in _table_rows(_section(report, "## Targets")) if row[0].startswith("feed: ")]
    assert len(feed_targets) == 6, feed_targets

    # TCP with CURVE beside ipc: three runs, ipc bracketing TCP, and the three targets.
    tcp = _section(report, "## TCP with CURVE beside ipc")
    assert [row[0] for row in _table_rows(tcp)[1:]] == ["ipc", "tcp + CURVE", "ipc, again"]
    tcp_targets = [row for row in _table_rows(_section(report, "## Targets")) if row[0].startswith("tcp: ")]
    assert len(tcp_targets) == 3, tcp_targets

    queries = _table_rows(_section(report, "### Queries"))
    assert [row[0] for row in queries[1:]] == list(READ_QUERIES)
    floors = _labels(report, "### The least that models add")
    assert floors[0].startswith("list_workflow_rows") and len(floors) == 4, floors
    targets = _table_rows(_section(report, "## Targets"))
    assert len(targets) > 20
    assert all(row[-1] in ("met", "**not met**", "not measured") for row in targets[1:])


@pytest.mark.parametrize("workload", ["audit", "mix"])
def test_profile_writer_applies_what_a_client_would_send(workload, tmp_path):
    tool = ROOT / "tools" / "profile_writer.py"
    env = {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(tmp_path / "run")}
    done = subprocess.run(
        [sys.executable, str(tool), "--workload", workload, "--operations", "760"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    # 760 calls plus the instance's hello, all applied: none became a dead letter.
    assert re.match(rf"{workload}: 761 operations applied, [0-9.]+ µs each$", done.stdout.strip())
    built = subprocess.run(
        [sys.executable, str(tool), "--workload", workload, "--operations", "10", "--build-only"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert built.returncode == 0 and built.stdout == "", built.stderr


def test_floors_alone_print_the_machines_call_floors():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--floors", "--procs", "1,3", "--seconds", "0.2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("- alone, paced at 2,000 calls/s: p50 ")
    assert sum("flooded by one process" in line for line in lines) == 2
    assert sum("flooded by 3 processes at once" in line for line in lines) == 2
    assert len(lines) == 5


@pytest.mark.slow
def test_reads_on_postgresql_run_alone_and_print_every_query(postgres_server: Any) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--only",
            "reads-postgresql",
            "--quick",
            "--read-workflows",
            "2000",
            "--postgresql-url",
            postgres_server.url(),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"bench.py exited {proc.returncode}\n{proc.stderr[-6000:]}"
    assert "## Reads on PostgreSQL" in proc.stdout
    assert _labels(proc.stdout, "### Queries") == list(READ_QUERIES)
    assert "raw psycopg" in proc.stdout and "**failed:**" not in proc.stdout


@pytest.mark.slow
def test_postgresql_backend_runs_alone_and_writes_its_section(postgres_server: Any, tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nthe SQLite sections\n", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--backend",
            "postgresql",
            "--seconds",
            "0.5",
            "--takeovers",
            "1",
            "--postgresql-url",
            postgres_server.url(),
            "--output",
            str(output),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"bench.py exited {proc.returncode}\n{proc.stderr[-6000:]}"
    report = output.read_text(encoding="utf-8")
    assert report.startswith("# Benchmarks\n\nthe SQLite sections\n")  # what was there is kept
    assert "<!-- kept by tools/bench.py" in report  # and a full run keeps this section in turn
    section = _section(report, "## PostgreSQL").split("<!-- written by")[0]
    assert section.strip() in proc.stdout  # printed as well as written
    assert "fsync " in section and "- psycopg: " in section
    assert [row[0] for row in _table_rows(section)[:4]] == [
        "system",
        "naive PostgreSQL",
        "see-persistence",
        "ceiling (COPY, 1 process)",
    ]
    takeover = _table_rows(_section(report, "### Take-over after SIGKILL of the writer"))
    assert [row[:2] for row in takeover[1:]] == [["PostgreSQL", "1"], ["SQLite", "1"]]
    assert "one per call, across the kills; no dead letters" in report
    assert len(_labels(report, "### Targets on PostgreSQL")) == 2
    assert "**failed" not in report


@pytest.mark.unit
def test_a_section_run_alone_replaces_its_last_version_and_keeps_the_rest(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from benchlib.report import KEPT_MARKER, write_kept_section
    finally:
        sys.path.remove(str(ROOT / "tools"))
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(f"# Benchmarks\n\n{KEPT_MARKER}\n## Writer takeover\n\nby chaos.py\n", encoding="utf-8")
    write_kept_section(output, "--backend x", "## X\n\nfirst")
    write_kept_section(output, "--backend y", "## Y\n\nother")
    write_kept_section(output, "--backend x", "## X\n\nsecond")
    text = output.read_text(encoding="utf-8")
    assert text.index(KEPT_MARKER) < text.index("## Writer takeover") < text.index("## X")
    assert "first" not in text and text.count("## X") == 1 and "second" in text and "other" in text
    fresh = tmp_path / "new.md"
    write_kept_section(fresh, "--backend x", "## X")
    assert fresh.read_text(encoding="utf-8").startswith(KEPT_MARKER)
