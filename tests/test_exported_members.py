"""The public names docs/DESIGN.md lists are exported, and __all__ lists only what exists."""

from __future__ import annotations

import subprocess
import sys

import see_persistence

DESIGN_NAMES = {
    "Client",
    "Reader",
    "Writer",
    "Status",
    "WorkflowExecution",
    "TaskExecution",
    "AuditEvent",
    "Instance",
    "InstanceStats",
}


def test_the_contract_names_are_exported() -> None:
    assert set(see_persistence.__all__) >= DESIGN_NAMES


def test_all_lists_only_defined_names_each_once() -> None:
    names = see_persistence.__all__
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(see_persistence, name)]
    assert missing == []


def test_status_compares_equal_to_its_lowercase_text() -> None:
    from see_persistence import Status

    assert [s == s.value.lower() for s in Status] == [True] * 5
    assert {s.value for s in Status} == {"pending", "running", "completed", "failed", "cancelled"}


def test_the_writer_process_loads_neither_the_client_nor_the_record_models():
    # The writer never returns a record: building the pydantic models would cost it about
    # 14 MB of its memory target for nothing.
    probe = (
        "import sys\n"
        "import see_persistence.cli, see_persistence.commands.writer, see_persistence.writer.service\n"
        "heavy = ('pydantic', 'see_persistence.protocol.models', 'see_persistence.client',"
        " 'see_persistence.reader')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
