"""Only the owner: files and the socket directory are private whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from conftest import wait_until

from see_persistence import Reader


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_socket_directory_are_owner_only_even_with_an_open_umask(tmp_path, db):
    runtime = tmp_path / "sockets"
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


def test_the_writer_refuses_a_socket_directory_others_can_write(tmp_path, db):
    runtime = tmp_path / "open-sockets"
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
