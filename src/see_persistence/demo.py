"""The demo: a writer and a few GUI-like processes on one database, then what a Reader sees.

`python -m see_persistence.demo DB NAME WORKFLOWS` is one GUI-like process; `run_demo`
(the `see-persistence demo` command) starts the writer and several of them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .client import Client
from .reader import Reader

WRITER_START_TIMEOUT_S = 20.0
GUI_TIMEOUT_S = 60.0


class DemoFailure(Exception):
    """A deliberate failure, to show what a failed task and workflow look like."""


def gui_process(db_path: Path, name: str, workflows: int) -> str:
    """Record `workflows` workflow runs as one GUI instance would; return its instance id."""
    with Client(db_path) as client:
        for number in range(workflows):
            try:
                with client.workflow(
                    f"{name}-build-{number}", metadata={"gui": name, "number": number}
                ) as run:
                    for step in ("checkout", "compile", "test"):
                        with run.task(step) as task:
                            task.log(f"{step} started by {name}")
                            if step == "test" and number % 4 == 3:
                                raise DemoFailure(f"2 of 40 tests failed in build {number}")
                            task.log(f"{step} finished")
                    # The context managers record task_* and workflow_* events themselves.
                    run.event("artifacts_published", f"build {number}: 3 artifacts", data={"artifacts": 3})
            except DemoFailure:
                pass
        if not client.flush(timeout=30.0):
            raise SystemExit(f"{name}: the writer did not confirm everything within 30 s")
        return client.instance_id


def _wait_for_writer(reader: Reader, pid: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WRITER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the writer exited with code {process.returncode} before it was ready")
        try:
            status = reader.get_writer_status()
        except FileNotFoundError:
            status = None
        if status is not None and status.alive and status.pid == pid:
            return
        time.sleep(0.05)
    raise SystemExit("the writer did not take the lease within 20 s")


def run_demo(db_path: Path, *, guis: int = 3, workflows: int = 4) -> int:
    """Start a writer, run `guis` GUI-like processes, print what they recorded, stop the writer."""
    db_path = db_path.expanduser().absolute()
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(f"demo database: {db_path}")
    writer = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", "--log-level", "WARNING", "writer", "--db", str(db_path)]
    )
    reader = Reader(db_path)
    try:
        _wait_for_writer(reader, writer.pid, writer)
        print(f"writer: pid {writer.pid}")
        started = time.monotonic()
        gui_procs = [
            subprocess.Popen(
                [sys.executable, "-m", "see_persistence.demo", str(db_path), f"gui{n + 1}", str(workflows)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(guis)
        ]
        instance_ids = []
        for proc in gui_procs:
            out, _ = proc.communicate(timeout=GUI_TIMEOUT_S)
            if proc.returncode != 0:
                print(f"a GUI process failed with code {proc.returncode}", file=sys.stderr)
                return 1
            instance_ids.append(out.strip())
        print(
            f"{guis} GUI processes recorded {guis * workflows} workflows"
            f" in {time.monotonic() - started:.2f} s\n"
        )
        _show(reader, instance_ids)
    finally:
        writer.send_signal(signal.SIGTERM)
        code = writer.wait(timeout=30)
        reader.close()
    print(f"\nwriter stopped cleanly (exit code {code})")
    return 0 if code == 0 else 1


def _show(reader: Reader, instance_ids: list[str]) -> None:
    print("workflows per instance (what a Reader sees):")
    for instance_id in instance_ids:
        runs = reader.get_workflows_for_instance(instance_id)
        statuses = Counter(str(run.status) for run in runs)
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        print(f"  {instance_id}  {len(runs)} workflows: {summary}")
    runs = reader.get_workflows_for_instance(instance_ids[0])
    failed = next((r for r in runs if r.status == "failed"), runs[0])
    print(f"\ntasks of {failed.workflow_name} ({failed.status}, error: {failed.error_message}):")
    for task in reader.get_tasks_for_workflow(failed.id):
        print(f"  {task.execution_order}. {task.task_name:<9} {task.status!s:<10} logs={task.logs}")
    done = next((r for r in runs if r.status == "completed"), runs[0])
    print(f"\naudit trail of {done.workflow_name}:")
    for event in reader.get_audit_trail(done.id):
        print(f"  {event.timestamp.isoformat()}  {event.event_type:<20} {event.message}")
    print("\nrow counts: " + ", ".join(f"{n} {c}" for n, c in reader.count_rows().items()))


if __name__ == "__main__":
    print(gui_process(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
