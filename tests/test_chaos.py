"""tools/chaos.py end to end: a short run with kills and stops must lose nothing and double nothing.

One run of the tool (a subprocess that starts its own writers and clients) is shared by the
tests of this module: the first checks its report, the second checks that the tool's
verification really finds lost, doubled, extra and changed records in a tampered copy.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "chaos.py"
CLIENTS = 2
# Seed 3 makes the first faults kill, kill, stop: at least two kills fit in 8 s, then a stop.
ARGS = ["--clients", str(CLIENTS), "--seconds", "8", "--kill-every", "1.5", "--stop-fraction", "0.3"]
ARGS += ["--seed", "3", "--json"]
RUN_TIMEOUT_S = 90.0


def _load_tool() -> ModuleType:
    """Import tools/chaos.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("see_chaos_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the tool once: its exit code, parsed JSON report, stderr and run directory."""
    run_dir = tmp_path_factory.mktemp("chaos") / "run"
    process = subprocess.Popen(
        [sys.executable, str(TOOL), *ARGS, "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the tool kills every process it started, then exits
        out, err = process.communicate(timeout=30)
        pytest.fail(f"the chaos run took more than {RUN_TIMEOUT_S} s:\n{err[-4000:]}")
    report = json.loads(out) if out.strip() else None
    return {"code": process.returncode, "report": report, "stderr": err, "run_dir": run_dir}


@pytest.mark.slow
def test_a_short_chaos_run_loses_nothing_doubles_nothing_and_passes(chaos_run: dict[str, Any]) -> None:
    report = chaos_run["report"]
    assert report is not None, f"no JSON report; stderr:\n{chaos_run['stderr'][-4000:]}"
    assert report["lost"] == 0, report["discrepancies"]
    assert report["duplicated"] == 0, report["discrepancies"]
    assert report["extra"] == 0, report["discrepancies"]
    assert report["mismatched"] == 0, report["discrepancies"]
    assert report["integrity"] == "ok"
    assert report["dead_letters"] == 0
    assert report["kills"] >= 2, report["actions"]
    for kind, counts in report["records"].items():
        assert counts["committed"] > 0, f"no {kind} committed"
        assert counts["committed"] == counts["asked"], kind
    assert report["stopped_exited_4"] == report["stops"], report["problems"]
    assert chaos_run["code"] == 0, report["problems"] + report["discrepancies"]
    assert report["passed"] is True


@pytest.mark.slow
def test_the_verification_finds_lost_doubled_extra_and_changed_records(
    chaos_run: dict[str, Any], tmp_path: Path
) -> None:
    chaos = _load_tool()
    run_dir: Path = chaos_run["run_dir"]
    manifests = chaos._load_manifests(run_dir, CLIENTS)
    assert len(manifests) == CLIENTS, chaos_run["stderr"][-4000:]
    tampered = tmp_path / "tampered.db"
    with chaos.read_only(run_dir / "workflows.db") as source:
        target = sqlite3.connect(tampered)
        source.backup(target)
    workflow = manifests[0]["workflows"][0]
    task_with_logs = next(t for t in manifests[0]["tasks"] if t[7])
    other_task = next(t for t in manifests[1]["tasks"] if t[0] != task_with_logs[0])
    with target:
        target.execute("DELETE FROM workflow_executions WHERE id = ?", (workflow[0],))
        target.execute(
            "UPDATE task_executions SET logs = json_insert(logs, '$[#]', ?) WHERE id = ?",
            (task_with_logs[7][0], task_with_logs[0]),
        )
        target.execute(
            "UPDATE task_executions SET status = ? WHERE id = ?",
            ("running" if other_task[4] != "running" else "pending", other_task[0]),
        )
        target.execute(
            "INSERT INTO audit_events (id, event_type, message, timestamp, data)"
            " VALUES ('not-asked-for', 'chaos_step', 'nobody-ev-0', '2026-01-01T00:00:00.000000+00:00', '{}')"
        )
        target.execute(
            "INSERT INTO dead_letters (received_at, reason, raw)"
            " VALUES ('2026-01-01T00:00:00.000000+00:00', 'tampered', x'00')"
        )
    target.close()

    before = chaos.verify(run_dir / "workflows.db", manifests)
    found = chaos.verify(tampered, manifests)

    def more(what: str, kind: str | None = None) -> int:
        if kind is None:
            return int(getattr(found, what) - getattr(before, what))
        return int(getattr(found.kinds[kind], what) - getattr(before.kinds[kind], what))

    assert more("lost", "workflows") == 1
    assert more("duplicated", "log_lines") == 1
    assert more("extra", "events") == 1
    assert more("mismatched") == 1
    assert more("dead_letters") == 1
    assert found.total("lost") - before.total("lost") == 1
    assert found.total("duplicated") - before.total("duplicated") == 1
    assert found.total("extra") - before.total("extra") == 1
    assert found.integrity == "ok"
    assert any(workflow[1] in text for text in found.discrepancies)
