"""Helpers for the command-line tests: run `python -m see_persistence`, build test databases.

A module-scoped `populated` database (one writer process, one client run) is shared by the
tests that only read; tests that change a file make their own.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientProcess, WriterProcess, wait_until

from see_persistence import Reader
from see_persistence.protocol import schema

CLI_TIMEOUT_S = 60.0


def cli(
    *args: str | Path, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m see_persistence ARGS` to the end and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "see_persistence", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with `code` and said why in exactly one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def make_unwritten_db(path: Path) -> None:
    """A database with this layer's schema and no rows, made without a writer (no lease, no counters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in schema.upgrade_statements(0):
        conn.execute(statement)
    conn.execute(schema.version_row_statement(), (schema.SCHEMA_VERSION, "2026-01-01T00:00:00.000000+00:00"))
    conn.commit()
    conn.close()
    os.chmod(path, 0o600)


def make_text_file(path: Path) -> None:
    """A file that is not SQLite at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a database\n" * 20)


def make_foreign_db(path: Path) -> None:
    """An SQLite file that is someone else's: none of the S_E_E tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
    conn.execute("INSERT INTO recipes VALUES ('bread', 240)")
    conn.commit()
    conn.close()


def counts(db: Path) -> dict[str, int]:
    """Row counts of a database, through a Reader."""
    with Reader(db) as reader:
        return reader.count_rows()


def integrity(db: Path) -> str:
    """PRAGMA integrity_check's first line."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def stop_writer(writer: WriterProcess) -> None:
    """Stop a writer cleanly (SIGTERM: it commits and releases the lease) and check it exited 0."""
    if writer.process.poll() is None:
        writer.signal(signal.SIGTERM)
        assert writer.wait_exit(timeout=20) == 0, writer.log()
    writer.stop()


class LineReader:
    """The stdout of a long-running command, line by line, with deadlines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float = 20.0) -> list[str]:
        """Every line read up to and including the first one containing `needle`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            seen.append(line)
            if needle in line:
                return seen
        raise AssertionError(f"no line with {needle!r} within {timeout} s; got {seen!r}")

    def remaining(self, timeout: float = 10.0) -> list[str]:
        """Once the process has ended: every line not taken by wait_for yet."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the process's stdout is still open"
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rest


@dataclass
class Populated:
    """A database that one writer (still running) and one client run filled."""

    db: Path
    directory: Path
    writer: WriterProcess
    report: dict[str, Any]


def populated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    """For a module-scoped fixture: a populated database, its writer kept running, then stopped."""
    directory = tmp_path_factory.mktemp("cli")
    db = directory / "data" / "workflows.db"
    db.parent.mkdir(mode=0o700)
    writer = WriterProcess(db, directory / "writer.log")
    try:
        writer.wait_holding_lease()
        client = ClientProcess(db, "--label", "pop", "--workflows", "4", "--tasks", "2", "--events", "2")
        try:
            report = client.finish()
        finally:
            client.kill()
        assert report["flushed"], report
        yield Populated(db=db, directory=directory, writer=writer, report=report)
    finally:
        stop_writer(writer)


def wait_for_counters(db: Path, pid: int) -> dict[str, int]:
    """Wait until the writer `pid` has published counters that include committed operations."""
    reader = Reader(db)
    try:
        return wait_until(
            lambda: (
                (c := reader.get_counters()).get("writer.pid") == pid
                and c.get("writer.operations_total")
                and c
            ),
            20,
            "the writer's counters with its first batches",
        )
    finally:
        reader.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of `text`, parsed as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
