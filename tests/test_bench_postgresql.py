"""Smoke tests of the benchmark on PostgreSQL: the reads alone, and `--backend postgresql`.

Apart from tests/test_bench.py so that pytest-xdist runs them beside its long quick run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_support import BENCH, READ_QUERIES, ROOT, RUN_TIMEOUT_S, report_section, row_labels, table_rows


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
    assert row_labels(proc.stdout, "### Queries") == list(READ_QUERIES)
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
    section = report_section(report, "## PostgreSQL").split("<!-- written by")[0]
    assert section.strip() in proc.stdout  # printed as well as written
    assert "fsync " in section and "- psycopg: " in section
    assert [row[0] for row in table_rows(section)[:4]] == [
        "system",
        "naive PostgreSQL",
        "see-persistence",
        "ceiling (COPY, 1 process)",
    ]
    takeover = table_rows(report_section(report, "### Take-over after SIGKILL of the writer"))
    assert [row[:2] for row in takeover[1:]] == [["PostgreSQL", "1"], ["SQLite", "1"]]
    assert "one per call, across the kills; no dead letters" in report
    assert len(row_labels(report, "### Targets on PostgreSQL")) == 2
    assert "**failed" not in report
