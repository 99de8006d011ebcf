"""The database is the file, not the spelling of its path (issue 11, items 2 and 3).

Other names for one file meet at one writer (a symlink and `..`, a bind mount); a second name
of the same inode (a hard link) is refused everywhere; and a writer whose path stops leading
to the file it has open (rm, mv, rm -rf of the directory) stops instead of confirming
commits into a file no name reaches, and leaves the path clean for the next writer.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli
from conftest import wait_until

from see_persistence import Client, Reader, locations

EXIT_TIMEOUT_S = 15.0  # the writer looks once a second; the bound is for a loaded machine


def _workflow_count(db: Path) -> int:
    reader = Reader(db)
    try:
        return reader.count_rows()["workflow_executions"]
    finally:
        reader.close()


def test_a_path_through_a_symlink_and_dotdot_is_the_file_open_reaches(tmp_path, db, writers, clients):
    (db.parent / "sub").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "link").symlink_to(db.parent / "sub")
    spelled = f"{elsewhere}/link/../{db.name}"  # open() reaches data/workflows.db; text says elsewhere/
    assert locations.resolve_db_path(spelled) == db
    assert locations.endpoints_for(Path(spelled)).pull == locations.endpoints_for(db).pull
    writers(db).wait_holding_lease()
    report = clients(Path(spelled), "--workflows", "4").finish()
    assert report["flushed"] is True
    assert _workflow_count(db) == 4
    assert not (elsewhere / db.name).exists()  # no stray database where the text pointed


@pytest.fixture
def bind_view(tmp_path, db):
    """`view/`, a bind mount of the database's directory (skipped where mounting is not allowed)."""
    view = tmp_path / "view"
    view.mkdir()
    result = subprocess.run(["mount", "--bind", str(db.parent), str(view)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {result.stderr.strip()}")
    yield view
    subprocess.run(["umount", "--lazy", str(view)], check=True)


def test_a_gui_on_a_bind_mount_of_the_directory_meets_the_writer(db, bind_view, writers, clients):
    seen_through_view = bind_view / db.name
    assert locations.endpoints_for(seen_through_view).pull == locations.endpoints_for(db).pull
    writers(db).wait_holding_lease()
    report = clients(seen_through_view, "--workflows", "100", "--tasks", "0", "--events", "0").finish()
    assert report["flushed"] is True
    assert _workflow_count(db) == 100


def test_a_database_with_two_names_is_refused_by_the_writer_and_the_commands(socket_dir, db, writers):
    first = writers(db)
    first.wait_holding_lease()
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    hard = db.with_name("hard.db")
    os.link(db, hard)
    with pytest.raises(locations.HardLinkedDatabase, match="2 names"):
        locations.check_single_name(db)
    env = {**os.environ, locations.RUNTIME_DIR_ENV_VAR: str(socket_dir)}
    for name in (db, hard):
        result = cli("writer", "--db", name, env=env)
        assert_one_line_error(result, 1, str(name), "hard links", "corrupt")
    assert_one_line_error(cli("status", "--db", hard), 1, str(hard), "hard links")
    assert_one_line_error(cli("check", "--db", db), 1, str(db), "hard links")
    for name in (db, hard):  # a GUI learns it at once, before anything is sent
        with pytest.raises(locations.HardLinkedDatabase, match="2 names"):
            Client(name)
    hard.unlink()
    writers(db).wait_holding_lease()  # one name again: served


def _remove_file(db: Path) -> None:
    db.unlink()


def _move_file(db: Path) -> None:
    db.rename(db.with_name("moved.db"))


def _remove_directory(db: Path) -> None:
    shutil.rmtree(db.parent)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_remove_file, "(the file this writer had open was deleted)"),
        (_move_file, "moved to"),
        (_remove_directory, ""),
    ],
    ids=["rm-file", "mv-file", "rm-rf-directory"],
)
def test_a_writer_whose_file_is_removed_or_moved_stops_and_a_new_one_serves_a_fresh_file(
    db, writers, clients, change, said
):
    writer = writers(db)
    writer.wait_holding_lease()
    assert clients(db, "--label", "before", "--workflows", "3").finish()["flushed"] is True
    # A GUI that stays: its Reader has the old file open, as a running GUI's would.
    staying = clients(db, "--label", "staying", "--workflows", "0", "--wait-before-record")
    staying.read_event()
    change(db)
    assert writer.wait_exit(EXIT_TIMEOUT_S) == 1
    log = writer.log()
    assert f"the database file {db} is gone" in log
    assert said in log
    assert "this writer stops, committing and confirming nothing more" in log
    if change is _move_file:
        moved = db.with_name("moved.db")
        # Everything it committed is in the moved file itself (no -wal of its own beside it),
        # and the old names of its -wal and -shm are free.
        assert not Path(f"{moved}-wal").exists()
        assert _workflow_count(moved) == 3
        moved_status = Reader(moved).get_writer_status()
        assert moved_status is not None and not moved_status.alive
    if change is _remove_directory:
        db.parent.mkdir(mode=0o700)
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    writers(db).wait_holding_lease()
    assert clients(db, "--label", "after", "--workflows", "2").finish()["flushed"] is True
    assert _workflow_count(db) == 2  # a fresh file: only what was sent to it


def test_a_standby_whose_file_is_removed_stops_too(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to stand by")
    db.unlink()
    assert standby.wait_exit(EXIT_TIMEOUT_S) == 1
    assert writer.wait_exit(EXIT_TIMEOUT_S) == 1
    assert f"the database file {db} is gone" in standby.log()


def test_the_wal_of_a_deleted_database_is_refused_while_open_and_removed_once_not(socket_dir, db, writers):
    conn = sqlite3.connect(db, isolation_level=None)  # another program's connection, kept open
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE other (x)")
    conn.execute("INSERT INTO other VALUES (1)")
    db.unlink()  # its -wal and -shm stay, and the connection still uses them
    env = {**os.environ, locations.RUNTIME_DIR_ENV_VAR: str(socket_dir)}
    result = cli("writer", "--db", db, env=env)
    assert_one_line_error(result, 1, f"{db} does not exist", f"{db}-shm", "still open in another process")
    assert not db.exists()  # refused before creating anything
    conn.close()  # SQLite sees its file gone and leaves the -wal and -shm where they are
    assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
    writer = writers(db)
    writer.wait_holding_lease()
    assert f"removed {db}-wal" in writer.log()
    reader = Reader(db)
    assert "other" not in {row[0] for row in reader.query("SELECT name FROM sqlite_master")}
    reader.close()
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0


def test_the_default_directory_is_made_owner_only_before_the_socket_is_named(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != locations.DB_ENV_VAR}
    env["HOME"] = str(home)
    code = (
        "from see_persistence import locations; "
        "print(locations.endpoints_for(locations.resolve_db_path(None)).pull)"
    )
    named = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    default_dir = home / ".s_e_e"
    assert default_dir.is_dir() and (default_dir.stat().st_mode & 0o777) == 0o700
    # Named by the directory's identity from the first call on: the writer, which creates the
    # directory anyway, arrives at the same name.
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert named.stdout == again.stdout
