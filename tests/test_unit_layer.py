"""The unit layer (`make test-unit`): a test marked unit that starts a process fails."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest
from conftest import UnitTestStartedAProcess

pytestmark = pytest.mark.unit


def test_a_unit_test_cannot_run_a_subprocess() -> None:
    with pytest.raises(UnitTestStartedAProcess, match=r"subprocess\.Popen"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_a_unit_test_cannot_fork() -> None:
    with pytest.raises(UnitTestStartedAProcess, match=r"os\.fork"):
        os.fork()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_unit_test_cannot_start_a_multiprocessing_child(method: str) -> None:
    process = multiprocessing.get_context(method).Process(target=print)
    with pytest.raises(UnitTestStartedAProcess):
        process.start()
