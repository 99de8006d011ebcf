"""Only the owner: files and the socket directory are private whatever the umask, and a file
the app's Rust core made open to others (0644) is made owner-only when a writer takes it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli, stop_writer
from conftest import wait_until
from test_protocol_schema import SEED_DDL

from see_persistence import Reader

NOBODY = 65534
REFUSAL_TIMEOUT_S = 30.0  # a refused writer exits at once; the bound is for a loaded machine


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_socket_directory_are_owner_only_even_with_an_open_umask(socket_dir, db):
    runtime = socket_dir
    env = {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(runtime)}
    writer = subprocess.Popen(
        ["sh", "-c", f'umask 000; exec "{sys.executable}" -m see_persistence writer --db "{db}"'],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        reader = Reader(db)
        wait_until(lambda: db.exists() and reader.get_writer_status() is not None, 20, "the writer to start")
        wait_until(lambda: any(runtime.glob("*.pull")), 20, "the socket to be bound")
        assert _mode(db) == 0o600
        for suffix in ("-wal", "-shm"):
            assert _mode(f"{db}{suffix}") == 0o600
        assert _mode(runtime) == 0o700
        assert _mode(db.parent) == 0o700
    finally:
        writer.terminate()
        assert writer.wait(timeout=20) == 0


def test_the_writer_refuses_a_socket_directory_others_can_write(socket_dir, db):
    runtime = socket_dir
    runtime.mkdir()
    runtime.chmod(0o777)
    env = {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [sys.executable, "-m", "see_persistence", "writer", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "others could reach the writer's socket" in result.stderr
    assert "chmod 700" in result.stderr
    assert not any(runtime.iterdir())


@pytest.fixture
def seed_db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """The seed's file, 0644 with its -wal and -shm, in a 0755 directory, as the Rust core leaves it.

    Its connection stays open, as the running app's would: SQLite removes the -wal and -shm
    when the last connection closes, and the writer must find them.
    """
    directory = tmp_path / "home-subfolder"
    directory.mkdir()
    directory.chmod(0o755)
    path = directory / "workflows.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.executescript(SEED_DDL)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at)"
        " VALUES ('seed-wf', 'from the seed', 'completed', '2026-01-01T00:00:00Z')"
    )
    for file in _files(path):
        os.chmod(file, 0o644)
    assert [_mode(file) for file in _files(path)] == [0o644] * 3
    yield path, conn
    conn.close()


def _files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def _private_runtime(socket_dir: Path) -> dict[str, str]:
    return {**os.environ, "SEE_PERSISTENCE_RUNTIME_DIR": str(socket_dir)}


def test_a_seed_file_open_to_others_is_made_owner_only_and_the_writer_says_so(seed_db, writers):
    db, _seed = seed_db
    writer = writers(db)
    writer.wait_holding_lease()
    assert [_mode(file) for file in _files(db)] == [0o600] * 3
    log = writer.log()
    changes = [line for line in log.splitlines() if "owner-only" in line]
    assert len(changes) == 1, log  # once, though the checkpointer opens a second connection
    assert "WARNING" in changes[0], changes[0]
    for file in _files(db):
        assert f"{file} 0644 -> 0600" in changes[0], changes[0]
    # The directory is the user's: others may list it, but cannot open a 0600 file in it.
    assert _mode(db.parent) == 0o755
    stop_writer(writer)
    with Reader(db) as reader:
        assert reader.get_workflow("seed-wf") is not None


def test_an_owner_only_file_is_left_alone_and_nothing_is_logged(db, writers):
    first = writers(db)
    first.wait_holding_lease()
    stop_writer(first)
    again = writers(db)
    again.wait_holding_lease()
    assert "owner-only" not in again.log()
    assert _mode(db) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user (os.chown)")
@pytest.mark.parametrize("whose", ["", "-journal"], ids=["the database", "a leftover -journal"])
def test_a_file_of_another_user_that_others_can_open_is_refused_and_left_alone(seed_db, socket_dir, whose):
    # Root could open and chmod it; the writer refuses anyway: another user's modes are theirs.
    # A companion of another user is a -journal here (an empty one, as journal_mode=TRUNCATE
    # leaves): SQLite running as root gives the -wal and -shm it opens to the database's owner.
    db, _seed = seed_db
    theirs = Path(f"{db}{whose}")
    theirs.touch()
    os.chmod(theirs, 0o644)
    os.chown(theirs, NOBODY, NOBODY)
    result = cli("writer", "--db", db, timeout=REFUSAL_TIMEOUT_S, env=_private_runtime(socket_dir))
    line = assert_one_line_error(result, 1, str(theirs), f"belongs to uid {NOBODY}", f"chmod 600 {theirs}")
    assert line.startswith("see-persistence writer: "), line
    assert [_mode(file) for file in _files(db)] == [0o644] * 3  # refused before changing any
    assert os.stat(theirs).st_uid == NOBODY


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Files to make immutable with chattr +i (their chmod then fails, even for root); undone after."""
    probe = tmp_path / "probe"
    probe.touch()
    chattr = shutil.which("chattr")
    works = chattr is not None and subprocess.run([chattr, "+i", probe], capture_output=True).returncode == 0
    if works:
        subprocess.run([chattr, "-i", probe], check=True)
    probe.unlink()
    if not works:
        pytest.skip("chattr +i is not available here (it needs root and a filesystem such as ext4)")
    marked: list[Path] = []
    yield marked
    for path in marked:
        subprocess.run([chattr, "-i", path], check=True)


def test_a_file_whose_mode_cannot_be_changed_is_refused_and_what_was_changed_is_logged(
    seed_db, socket_dir, immutable
):
    db, _seed = seed_db
    shm = Path(f"{db}-shm")
    subprocess.run(["chattr", "+i", shm], check=True)
    immutable.append(shm)
    result = cli("writer", "--db", db, timeout=REFUSAL_TIMEOUT_S, env=_private_runtime(socket_dir))
    assert result.returncode == 1, result.stderr
    *logged, last = result.stderr.strip().splitlines()
    assert last.startswith(f"see-persistence writer: cannot make {shm} owner-only"), result.stderr
    assert "chmod failed: Operation not permitted" in last, last
    assert [_mode(file) for file in _files(db)] == [0o600, 0o600, 0o644]
    assert any(f"{db} 0644 -> 0600" in line and f"{db}-wal 0644 -> 0600" in line for line in logged), logged
