"""The public names of DESIGN.md are exported, and __all__ lists only what exists."""

from __future__ import annotations

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
