"""`tail --follow` and `status --watch` on the change feed, as real processes beside real writers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import LineReader, cli, stop_writer
from conftest import WriterProcess, wait_until

from see_persistence import Client

EVENTS_PER_ROUND = 10


@pytest.fixture
def commands() -> Iterator[list[subprocess.Popen[str]]]:
    """Long-running `see-persistence` processes a test starts; any still running is killed after."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _start(
    started: list[subprocess.Popen[str]], *args: str | Path
) -> tuple[subprocess.Popen[str], LineReader]:
    process = subprocess.Popen(
        [sys.executable, "-m", "see_persistence", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    return process, LineReader(process)


def _ends_cleanly(process: subprocess.Popen[str], signum: int) -> None:
    process.send_signal(signum)
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def _record(client: Client, round_number: int) -> list[str]:
    """One round of audit events; their messages, in the order recorded."""
    messages = [f"round-{round_number}-event-{n}" for n in range(EVENTS_PER_ROUND)]
    for message in messages:
        client.log_audit_event("follow", message)
    return messages


def test_tail_follow_prints_each_event_once_in_order_across_kill_9_takeover_and_restart(
    db: Path, writers, commands
) -> None:
    first = writers(db)
    first.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    with Client(db) as client:
        client.log_audit_event("seed", "before tail started")
        assert client.flush(timeout=30)
        process, lines = _start(commands, "tail", "--follow", "--type", "follow", "--db", db, "-n", "0")
        # Wait until tail has read where the file ends: then every later event is its to print.
        probe = 0
        printed: list[str] = []

        def probe_printed() -> bool:
            nonlocal probe
            probe += 1
            client.log_audit_event("follow", f"probe-{probe}")
            assert client.flush(timeout=30)
            try:
                printed.extend(lines.wait_for(f"probe-{probe}", timeout=0.5))
            except AssertionError:
                return False
            return True

        wait_until(probe_printed, 30, "tail --follow to print a probe event")
        expected: list[str] = []

        expected += _record(client, 0)
        assert client.flush(timeout=30)
        # Recorded, then the writer killed at once: some of them may die inside it uncommitted,
        # and the client resends those to the standby, which skips what was committed.
        expected += _record(client, 1)
        first.signal(signal.SIGKILL)
        assert first.wait_exit() == -signal.SIGKILL
        expected += _record(client, 2)  # while no writer runs
        standby.wait_holding_lease(timeout=30)
        assert client.flush(timeout=30)
        expected += _record(client, 3)
        standby.signal(signal.SIGKILL)
        assert standby.wait_exit() == -signal.SIGKILL
        restarted = writers(db)  # a restart, not a standby
        restarted.wait_holding_lease(timeout=30)
        expected += _record(client, 4)
        assert client.flush(timeout=30)

        printed += lines.wait_for(expected[-1], timeout=30)
        messages = [line.rstrip("\n").split("  ")[-1] for line in printed]
        after_probes = [m for m in messages if not m.startswith("probe-")]
        assert after_probes == expected
        assert len(set(messages)) == len(messages), "no event is printed twice"
        _ends_cleanly(process, signal.SIGTERM)
        assert lines.remaining() == [], "nothing more came after the last event (no late duplicate)"


def _blocks(lines: list[str]) -> list[list[str]]:
    """Text status reports, split at their separating blank lines."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line.rstrip("\n"))
        else:
            blocks.append([])
    return [block for block in blocks if block]


def test_status_watch_prints_a_new_block_when_a_client_records_and_ends_with_0_on_sigterm(
    db: Path, writers, commands
) -> None:
    writers(db).wait_holding_lease()
    # An interval far past every deadline here: a new block can only come from the feed.
    process, lines = _start(commands, "status", "--watch", "--interval", "3600", "--db", db)
    seen = lines.wait_for("rows ")
    assert "workflow_executions 0" in seen[-1]
    with Client(db) as client:
        client.create_workflow("watched")
        assert client.flush(timeout=30)
    seen += lines.wait_for("workflow_executions 1")
    blocks = _blocks(seen)
    assert len(blocks) >= 2 and all(block[0].startswith("database  ") for block in blocks)
    assert all(block[-1].startswith("rows      ") for block in blocks)
    assert "\n" in [line for line in seen if not line.strip()], "blocks are separated by a blank line"
    assert "\x1b" not in "".join(seen), "no terminal codes when stdout is not a terminal"
    _ends_cleanly(process, signal.SIGTERM)


def test_status_watch_json_prints_one_object_a_line_and_ends_with_0_on_sigint(
    db: Path, writers, commands
) -> None:
    writers(db).wait_holding_lease()
    process, lines = _start(commands, "status", "--watch", "--json", "--interval", "3600", "--db", db)
    first = json.loads(lines.wait_for('"rows"')[-1])
    assert first["rows"]["workflow_executions"] == 0 and first["writer"]["state"] == "alive"
    with Client(db) as client:
        client.create_workflow("watched")
        assert client.flush(timeout=30)
    seen = lines.wait_for('"workflow_executions": 1')
    reports = [json.loads(line) for line in seen]
    assert reports[-1]["rows"]["workflow_executions"] == 1
    assert set(reports[-1]) == set(first)
    _ends_cleanly(process, signal.SIGINT)
    assert all(json.loads(line)["database"] == str(db) for line in lines.remaining())


def test_status_watch_redraws_at_the_interval_with_nothing_committed(db: Path, writers, commands) -> None:
    writer: WriterProcess = writers(db)
    writer.wait_holding_lease()
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    # No writer, no commits: only the interval brings the next report.
    process, lines = _start(commands, "status", "--watch", "--json", "--interval", "0.2", "--db", db)
    reports = [json.loads(lines.wait_for('"rows"')[-1]) for _ in range(3)]
    assert all(report["writer"]["state"] == "released" for report in reports)
    _ends_cleanly(process, signal.SIGTERM)


def test_tail_follow_with_no_writer_prints_an_event_written_to_the_file_directly(
    db: Path, writers, commands
) -> None:
    writer: WriterProcess = writers(db)
    writer.wait_holding_lease()
    with Client(db) as client:
        client.log_audit_event("follow", "recorded through the writer")
        assert client.flush(timeout=30)
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    process, lines = _start(commands, "tail", "--follow", "--db", db, "-n", "1")
    lines.wait_for("recorded through the writer")
    # The app's Rust core, or a script, writing the file itself: no feed notice, only the file.
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO audit_events (id, event_type, message, timestamp)"
            " VALUES ('direct-1', 'script', 'written directly', '2026-01-01T00:00:00.000000+00:00')"
        )
    finally:
        conn.close()
    lines.wait_for("written directly")
    _ends_cleanly(process, signal.SIGINT)


def test_tail_follow_after_a_restore_prints_what_is_committed_to_the_restored_file(
    db: Path, writers, commands, tmp_path: Path
) -> None:
    writer: WriterProcess = writers(db)
    writer.wait_holding_lease()
    with Client(db) as client:
        client.log_audit_event("follow", "in the backup")
        assert client.flush(timeout=30)
        backup = tmp_path / "backup.db"
        assert cli("backup", "--db", db, backup).returncode == 0
        for n in range(5):  # the file tail follows ends past where the backup ends
            client.log_audit_event("follow", f"not in the backup {n}")
        assert client.flush(timeout=30)
    stop_writer(writer)
    log_path = tmp_path / "tail.log"
    argv = [sys.executable, "-m", "see_persistence", "--log-level", "INFO", "tail", "--follow"]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [*argv, "--db", str(db), "-n", "1"],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    commands.append(process)
    lines = LineReader(process)
    lines.wait_for("not in the backup 4")
    result = cli("restore", "--db", db, backup)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "file was replaced" in log_path.read_text(), 30, "tail to see the file replaced")
    writers(db).wait_holding_lease()
    with Client(db) as client:
        client.log_audit_event("follow", "after the restore")
        assert client.flush(timeout=30)
    seen = lines.wait_for("after the restore")
    assert [line for line in seen if "backup" in line] == [], "nothing of the restored history is printed"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert "Traceback" not in log_path.read_text()
