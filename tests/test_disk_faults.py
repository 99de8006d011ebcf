"""Faults of the disk: a commit that fails is kept and retried; clients buffer; nothing is lost.

Simulated with a small tmpfs filled to the last byte. Not simulated: a file made read-only
(the tests run as root, whom permissions do not stop) and a filesystem remounted read-only
(the kernel refuses while the writer holds files open for writing); both end in the same
retry path as a full disk, an error from SQLite on commit.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from see_persistence import Reader


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0"):  # big pieces, then the last few bytes
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_holds_commits_back_until_space_returns_and_nothing_is_lost(small_fs, writers, clients):
    db = small_fs / "workflows.db"
    writer = writers(db)
    writer.wait_holding_lease()
    assert clients(db, "--label", "before", "--workflows", "3").finish()["flushed"] is True
    filler = _fill(small_fs)
    client = clients(
        db,
        "--label",
        "during",
        "--workflows",
        "300",
        "--tasks",
        "3",
        "--logs",
        "3",
        "--events",
        "3",
        "--flush-timeout",
        "90",
        "--wait-after-record",
    )
    client.read_event()
    client.read_event()
    client.proceed()
    wait_until(lambda: "failed, will retry" in writer.log(), 30, "the writer to meet the full disk")
    assert writer.process.poll() is None
    filler.unlink()
    report = client.finish(timeout=120)
    assert report["flushed"] is True
    counts = Reader(db).count_rows()
    assert counts["workflow_executions"] == 303
    assert counts["task_executions"] == 3 * 2 + 300 * 3  # the first client makes 2 tasks each
    assert counts["audit_events"] == 3 + 300 * 3
    assert counts["dead_letters"] == 0
    assert "batch committed after" in writer.log()
    integrity = Reader(db).query("PRAGMA integrity_check")
    assert integrity == [("ok",)]
