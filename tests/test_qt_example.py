"""examples/live_workflows.py offscreen: its tree follows what another process records, and its button."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

try:
    import pytestqt  # noqa: F401 - its qtbot fixture is used below
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication  # noqa: F401 - what a missing system library breaks
except ImportError as exc:  # not installed, or a system library it needs is missing
    pytest.skip(
        f"the Qt example needs the gui extra (pip install -e '.[gui]'): {exc}", allow_module_level=True
    )

EXAMPLE = Path(__file__).parent.parent / "examples" / "live_workflows.py"
SHOWN_TIMEOUT_MS = 30_000


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("live_workflows", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


live_workflows = _example()


def _shown(window: live_workflows.LiveWorkflowsWindow) -> dict[str, tuple[str, dict[str, str]]]:
    """What the tree shows: workflow name -> (status, {task line: status})."""
    shown = {}
    for index in range(window.tree.topLevelItemCount()):
        item = window.tree.topLevelItem(index)
        tasks = {item.child(n).text(0): item.child(n).text(1) for n in range(item.childCount())}
        shown[item.text(0)] = (item.text(1), tasks)
    return shown


@pytest.fixture
def window(db: Path, writers, qtbot) -> live_workflows.LiveWorkflowsWindow:
    """The example's window on a fresh database with a writer of its own, shown offscreen."""
    writers(db).wait_holding_lease()
    # The test's writer runs: the window's Client must not start one that outlives the test.
    window = live_workflows.LiveWorkflowsWindow(db, spawn_writer=False, step_interval_ms=20)
    qtbot.addWidget(window)  # closed at teardown: closeEvent closes the watcher and the Client
    window.show()
    return window


def test_the_tree_shows_what_another_process_records(window, db: Path, clients, qtbot) -> None:
    other = clients(db, "--label", "other", "--workflows", "2", "--tasks", "2")
    assert other.finish()["flushed"]
    expected = {
        f"other-wf-{w}": ("completed", {f"{t + 1}. other-wf-{w}-task-{t}": "completed" for t in range(2)})
        for w in range(2)
    }

    def shows_them() -> None:
        shown = _shown(window)
        assert {name: shown.get(name) for name in expected} == expected

    qtbot.waitUntil(shows_them, timeout=SHOWN_TIMEOUT_MS)


def test_the_button_starts_a_workflow_that_the_tree_follows(window, qtbot) -> None:
    qtbot.mouseClick(window.button, Qt.MouseButton.LeftButton)
    names = live_workflows.TASK_NAMES
    expected = ("completed", {f"{n}. {name}": "completed" for n, name in enumerate(names, start=1)})

    def shows_it() -> None:
        assert _shown(window).get("demo-1") == expected

    qtbot.waitUntil(shows_it, timeout=SHOWN_TIMEOUT_MS)
