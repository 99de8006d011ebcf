"""Smoke tests of the benchmark's small tools: the writer profiler and the call floors.

Apart from tests/test_bench.py so that pytest-xdist runs them beside its long quick run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from bench_support import BENCH, ROOT


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
