"""`see-persistence check` fails a database whose file or -wal/-shm others can open, and prints
the chmod that fixes it; once that has run, the same file passes."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import cli, make_unwritten_db

CHECK_NAMES = ["integrity", "foreign_keys", "schema", "permissions", "lease"]


@pytest.fixture
def open_layer_db(db: Path) -> Iterator[Path]:
    """A layer database in WAL mode with its -wal and -shm present (a connection stays open)."""
    make_unwritten_db(db)
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    # A write, so that the -wal is not empty: SQLite gives an empty one the database's mode
    # whenever it opens it (check's own open would then hide the mode this test sets).
    conn.execute("PRAGMA user_version = 7")
    assert os.path.getsize(f"{db}-wal") > 0 and os.path.getsize(f"{db}-shm") > 0
    yield db
    conn.close()


def _files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def _check(db: Path) -> tuple[int, dict[str, str]]:
    """Run check; return its exit code and each check's line by name."""
    result = cli("check", "--db", db)
    assert not result.stderr, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert list(lines) == CHECK_NAMES, result.stdout
    return result.returncode, lines


@pytest.mark.parametrize(
    ("modes", "exposed"),
    [
        ((0o644, 0o644, 0o644), ("", "-wal", "-shm")),  # as the Rust core leaves them under umask 022
        ((0o600, 0o644, 0o600), ("-wal",)),  # a companion alone
        ((0o640, 0o600, 0o600), ("",)),  # group read is others too
    ],
)
def test_check_fails_files_others_can_open_and_its_chmod_makes_it_pass(open_layer_db, modes, exposed):
    db = open_layer_db
    for file, mode in zip(_files(db), modes, strict=True):
        os.chmod(file, mode)
    code, lines = _check(db)
    assert code == 1
    permissions = lines.pop("permissions")
    assert permissions.startswith("FAIL"), permissions
    assert all(line.startswith("ok") for line in lines.values()), lines  # the only reason for 1
    named = [Path(f"{db}{suffix}") for suffix in exposed]
    for path in named:
        assert f"{path.name} {stat.S_IMODE(os.stat(path).st_mode):04o}" in permissions, permissions
    command = permissions.split("run: ", 1)[1]
    assert shlex.split(command) == ["chmod", "600", *map(str, named)], permissions

    subprocess.run(shlex.split(command), check=True)  # exactly what check says to run
    code, lines = _check(db)
    assert code == 0, lines
    assert all(line.startswith("ok") for line in lines.values()), lines
    assert "0600" in lines["permissions"] and "0644" not in lines["permissions"]


def test_check_is_clean_on_an_owner_only_file_and_says_so_in_json(open_layer_db):
    db = open_layer_db
    assert [stat.S_IMODE(os.stat(file).st_mode) for file in _files(db)] == [0o600] * 3
    result = cli("check", "--db", db, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["name"] for o in outcomes] == CHECK_NAMES
    assert all(o["ok"] for o in outcomes), outcomes
    assert outcomes[3]["message"] == f"owner-only: {db.name} 0600, {db.name}-wal 0600, {db.name}-shm 0600"
