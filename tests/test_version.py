"""The version is written once, in see_persistence/__init__.py, and every other place reads it."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import see_persistence

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_the_installed_metadata_carries_the_package_version() -> None:
    try:
        installed = importlib.metadata.version("see-persistence")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("see-persistence is not installed in this environment: `make test` installs it")
    # An editable install keeps the version it was installed with: after a bump, reinstall
    # (`make test` does, since its stamp depends on __init__.py).
    assert installed == see_persistence.__version__


def test_pyproject_reads_the_version_from_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the rule is the same on 3.10
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert "version" not in config["project"], "the version lives in see_persistence/__init__.py only"
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "see_persistence.__version__"}


def test_the_command_prints_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"see-persistence {see_persistence.__version__}"
