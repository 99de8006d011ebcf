"""Smoke test of tools/bench.py --quick: it runs, exits 0 and writes every section and row.

A smoke test only: no figure is asserted (the benchmark reports, it never asserts, and timings on
a shared machine prove nothing).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench_support import BENCH, READ_QUERIES, ROOT, RUN_TIMEOUT_S, report_section, row_labels, table_rows

# --quick runs P=4 only (the P the targets are judged at): every table keeps its shape, with one row.
QUICK_PROCS = ("4",)

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
    assert "bench.py --quick" in report_section(report, "## Command")
    for name in ("Python", "SQLite", "pyzmq / libzmq", "msgpack", "pydantic"):
        assert f"- {name}: " in report_section(report, "## Versions")

    for workload in WORKLOAD_HEADERS:
        body = report_section(report, workload)
        for header in SECTION_HEADERS:
            assert header in body, f"{workload}: missing {header!r}"
        assert "### Disk: bytes per" in body
        throughput = table_rows(report_section(body, "### Committed rows/s"))
        assert [row[0] for row in throughput[1:]] == list(QUICK_PROCS)
        for row in throughput[1:]:
            assert all(cell != "n/a" for cell in row), f"{workload}: a figure is missing in {row}"
        latency = table_rows(report_section(body, "### Write call latency, flooding"))
        systems = {(row[0], row[1]) for row in latency[1:]}
        for p in QUICK_PROCS:
            assert (p, "naive, same ids") in systems
            assert (p, "see-persistence") in systems
        # The trivial call timed in the same loops, flooding and paced: a table each. Flooding
        # times one every 16th call, so every cell has a row; a paced GUI times one every 16th
        # wakeup, and a --quick phase on a loaded machine may lag through it in fewer wakeups.
        expected = {(p, s) for p in QUICK_PROCS for s in ("naive, same ids", "see-persistence")}
        for header, every_cell in (("### Write call latency, flooding", True), (SECTION_HEADERS[2], False)):
            rows = table_rows(report_section(body, header))
            tables = [row for row in rows[1:] if row[0] == "P"]
            assert tables and tables[0][2] == "trivial call p50", f"{workload}: no trivial-call table"
            controls = {(row[0], row[1]) for row in rows[rows.index(tables[0]) + 1 :]}
            if every_cell:
                # ... unless every GUI of our cell waited on its backlog through the whole window
                # (the naive GUIs have no backlog), and the notes say so for that cell.
                title = workload.removeprefix("## Writes: ").split(" (")[0]
                notes = report_section(report, "## Notes").splitlines()
                for p, system in expected - controls:
                    said = f"- {title}, see-persistence, P={p}: flood: "
                    assert system == "see-persistence" and any(
                        line.startswith(said) and "every GUI waited on its backlog" in line for line in notes
                    ), f"{workload}, {header}: no trivial-call row for {system} at P={p}, and no note why"
                assert controls <= expected, f"{workload}, {header}: {controls}"
            else:
                assert controls and controls <= expected, f"{workload}, {header}: {controls}"
        visible = table_rows(report_section(body, "### Send → visible, at half the peak rate"))
        assert visible[0][-3:] == [
            "ours p50 at 0.25 of the peak",
            "ours p99 at 0.25 of the peak",
            "cores busy at 0.25 of the peak",
        ]
        assert [row[0] for row in visible[1:]] == list(QUICK_PROCS)
        # The paced phases run at a fraction of the flood's committed rate; a --quick flood
        # window (0.5 s) on a loaded machine can end before any commit is confirmed, and the
        # report then says so in its notes instead.
        # A paced window can also end, under the suite's load, before any of its rows is
        # visible (the flood's backlog still draining): a missing figure must then be explained.
        flood_committed = {row[0]: row[3] != "0" for row in throughput[1:]}
        notes = report_section(report, "## Notes")
        for row in visible[1:]:
            if not flood_committed[row[0]]:
                assert "so the paced phases did not run" in notes
            elif "n/a" in row[3:5] + row[8:10]:
                assert "the probe saw none of the rows sent" in notes, (
                    f"{workload}: a send → visible figure is missing in {row}, and no note says why"
                )

    # Another program beside 4 flooding GUIs: the GUIs' rows/s in three phases of one run, the
    # other program's write waits, and its targets (whatever the figures are).
    other = report_section(report, "## Another program writing beside 4 flooding GUIs")
    phases = table_rows(report_section(other, "### The GUIs' committed rows/s"))
    assert row_labels(other, "### The GUIs' committed rows/s") == [
        "without the other program",
        "with the other program writing",
        "without it, again",
    ]
    assert phases[2][2] != "n/a", f"no rows/s with the other program: {phases[2]}"
    waits = table_rows(report_section(other, "### The other program's writes"))
    assert waits[0][:6] == ["writes", "errors", "p50", "p99", "p99.9", "max"] and len(waits) == 2
    assert int(waits[1][0]) >= 1 and waits[1][2] != "n/a", waits[1]  # its first write at least returned
    assert "The other program's rows: all " in other, other
    assert "WAL_RESTART_PAGES" in other
    other_targets = [
        row for row in table_rows(report_section(report, "## Targets")) if "another program" in row[0]
    ]
    assert len(other_targets) == 4, other_targets

    # Live views: commit -> delivered beside send -> delivered and send -> visible, the writer's
    # rows/s with 0, 1 and 8 watchers, a watcher stopped, the polling fallback; and their targets.
    live = report_section(report, "## Live views (change feed)")
    assert row_labels(live, "### Commit → delivered, each GUI at 0.25 of the peak rate") == [
        "commit → delivered",
        "writer's stamp before the batch → delivered",
        "send → delivered by the feed",
        "send → visible, polling every 1 ms",
    ]
    cost = table_rows(report_section(live, "### The writer's committed rows/s with 0, 1 and 8 watchers"))
    # --quick runs one round (the full run three), each ratio against the floods either side.
    assert [row[:2] for row in cost[1:]] == [
        ["round 1: no watcher", "0"],
        ["round 1: 1 watcher", "1"],
        ["round 1: 8 watchers", "8"],
        ["after the last round: no watcher", "0"],
    ]
    # A ratio for each flood with watchers (unless a 0.5 s window of the round confirmed nothing).
    confirmed_nothing = any(row[3] == "0" for row in cost[1:])
    for row in cost[1:]:
        if row[1] == "0":
            assert row[4] == "n/a", cost
        else:
            assert row[4].endswith("\N{MULTIPLICATION SIGN}") or confirmed_nothing, cost
    assert "The median ratio of the 1 round(s)" in live
    assert row_labels(live, "### A watcher stopped for 1 s while the GUIs flood") == [  # quick: 1 s
        "the watcher reading",
        "the watcher stopped (SIGSTOP)",
        "the watcher reading again",
    ]
    assert "The stopped watcher's RSS: " in live and "n/a before" not in live, live
    polled = table_rows(report_section(live, "### No writer running: the watcher polls the file"))
    assert polled[0] == ["changes", "p50", "max", "poll interval"] and polled[1][0] == "3", polled
    all_targets = table_rows(report_section(report, "## Targets"))
    feed_targets = [row for row in all_targets if row[0].startswith("feed: ")]
    assert len(feed_targets) == 6, feed_targets

    # TCP with CURVE beside ipc: three runs, ipc bracketing TCP, and the three targets.
    tcp = report_section(report, "## TCP with CURVE beside ipc")
    assert [row[0] for row in table_rows(tcp)[1:]] == ["ipc", "tcp + CURVE", "ipc, again"]
    tcp_targets = [row for row in all_targets if row[0].startswith("tcp: ")]
    assert len(tcp_targets) == 3, tcp_targets

    queries = table_rows(report_section(report, "### Queries"))
    assert [row[0] for row in queries[1:]] == list(READ_QUERIES)
    floors = row_labels(report, "### The least that models add")
    assert floors[0].startswith("list_workflow_rows") and len(floors) == 4, floors
    targets = table_rows(report_section(report, "## Targets"))
    assert len(targets) > 20
    assert all(row[-1] in ("met", "**not met**", "not measured") for row in targets[1:])


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
