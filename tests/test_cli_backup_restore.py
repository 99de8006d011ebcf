"""backup and restore as real processes: online copies under load, and restores that can be undone."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from cli_support import (
    assert_one_line_error,
    cli,
    counts,
    integrity,
    make_unwritten_db,
    populated_database,
    stop_writer,
)
from conftest import wait_until

from see_persistence import Reader
from see_persistence import cli as cli_module
from see_persistence.commands import restore as restore_command

GARBAGE = bytes(range(256)) * 16  # one 4 KiB page of it


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """One database per module, filled by a real writer and client; the writer keeps running."""
    yield from populated_database(tmp_path_factory)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _corrupt_middle_pages(path, pages=4):
    """Overwrite `pages` pages in the middle of an SQLite file with garbage."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert page_count >= 2 * pages + 2, page_count
    with open(path, "r+b") as f:
        for page in range(page_count // 2, page_count // 2 + pages):
            f.seek(page * page_size)
            f.write((GARBAGE * (page_size // len(GARBAGE) + 1))[:page_size])


def _replaced_files(db):
    return sorted(
        p
        for p in db.parent.glob(f"{db.name}.replaced-*")
        if not p.name.endswith(("-wal", "-shm", "-journal"))
    )


# -- backup ---------------------------------------------------------------------------------------


def test_backup_writes_a_whole_owner_only_copy_and_refuses_to_overwrite(populated, tmp_path):
    dest = tmp_path / "copy.db"
    result = cli("backup", "--db", populated.db, dest)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is a pipe
    assert str(dest) in result.stdout
    assert _mode(dest) == 0o600
    assert integrity(dest) == "ok"
    assert counts(dest) == counts(populated.db)
    assert sorted(os.listdir(tmp_path)) == ["copy.db"]  # one self-contained file, no leftovers
    with Reader(dest) as reader:
        lease = reader.get_writer_status()
    assert lease is not None and lease.released is not None  # a copy has no writer

    before = dest.read_bytes()
    assert_one_line_error(cli("backup", "--db", populated.db, dest), 1, "exists", "--force")
    assert dest.read_bytes() == before
    forced = cli("backup", "--db", populated.db, dest, "--force")
    assert forced.returncode == 0, forced.stderr
    assert integrity(dest) == "ok" and _mode(dest) == 0o600


def test_backup_while_a_client_keeps_writing_is_consistent(db, writers, clients, tmp_path):
    writers(db).wait_holding_lease()
    client = clients(
        db, "--label", "busy", "--workflows", "10000", "--tasks", "1", "--logs", "1", "--events", "0"
    )
    reader = Reader(db)
    wait_until(lambda: reader.count_rows()["workflow_executions"] >= 200, 30, "the client's first workflows")
    before = reader.count_rows()
    dest = tmp_path / "copy.db"
    # One page per step: the writer commits between the steps, and the copy stays one snapshot.
    result = cli("backup", "--db", db, dest, "--step-pages", "1")
    still_writing = client.process.poll() is None
    assert result.returncode == 0, result.stderr
    assert still_writing, "the client finished before the backup did; the test needs a longer workload"
    assert integrity(dest) == "ok"
    conn = sqlite3.connect(dest)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    copied = counts(dest)
    assert client.finish(timeout=90)["flushed"]
    after = counts(db)
    for table in ("workflow_executions", "task_executions"):
        assert before[table] <= copied[table] <= after[table], (table, before, copied, after)
    assert after["workflow_executions"] == 10000
    reader.close()


# -- check on a damaged copy ------------------------------------------------------------------------


def test_check_fails_on_a_copy_with_garbage_pages(populated, tmp_path):
    dest = tmp_path / "damaged.db"
    assert cli("backup", "--db", populated.db, dest).returncode == 0
    _corrupt_middle_pages(dest)
    result = cli("check", "--db", dest)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "FAIL" in result.stdout
    assert result.stdout.splitlines()[0].startswith("FAIL") and "integrity" in result.stdout.splitlines()[0]


# -- restore --------------------------------------------------------------------------------------


def test_restore_is_refused_while_a_live_writer_holds_the_lease(populated, tmp_path):
    backup = tmp_path / "backup.db"
    assert cli("backup", "--db", populated.db, backup).returncode == 0
    before = counts(populated.db)
    result = cli("restore", "--db", populated.db, backup)
    assert_one_line_error(result, 3, "live writer", f"pid {populated.writer.pid}")
    assert counts(populated.db) == before
    assert _replaced_files(populated.db) == []


def _commit_seq(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT commit_seq FROM writer_lease").fetchone()[0])
    finally:
        conn.close()


def test_restore_round_trip_keeps_the_replaced_file(db, writers, clients, tmp_path):
    writer = writers(db)
    writer.wait_holding_lease()
    clients(db, "--label", "kept", "--workflows", "3").finish()
    (tmp_path / "backups").mkdir()
    backup = tmp_path / "backups" / "backup.db"
    assert cli("backup", "--db", db, backup).returncode == 0
    clients(db, "--label", "later", "--workflows", "2").finish()
    assert counts(db)["workflow_executions"] == 5
    stop_writer(writer)

    result = cli("restore", "--db", db, backup)
    assert result.returncode == 0, result.stderr
    restored = counts(db)
    assert restored["workflow_executions"] == 3 and restored["task_executions"] == 6
    with Reader(db) as reader:
        assert {w.workflow_name for w in reader.list_workflows()} == {f"kept-wf-{n}" for n in range(3)}
    assert _mode(db) == 0o600
    assert not (db.parent / f"{db.name}-wal").exists()  # the old file's WAL went with it
    replaced = _replaced_files(db)
    assert len(replaced) == 1 and str(replaced[0]) in result.stdout
    assert counts(replaced[0])["workflow_executions"] == 5  # nothing of the old file is lost
    assert os.listdir(backup.parent) == ["backup.db"]  # the source is untouched, no -wal or -shm beside it
    # the change feed's commit numbers only grow, across the restore too
    assert _commit_seq(db) > _commit_seq(replaced[0]) > _commit_seq(backup)
    assert not [p for p in os.listdir(db.parent) if ".restoring-" in p]

    # the restored file serves the next writer
    writers(db).wait_holding_lease()
    clients(db, "--label", "after", "--workflows", "1").finish()
    assert counts(db)["workflow_executions"] == 4
    assert cli("check", "--db", db).returncode == 0


def test_restore_onto_a_path_with_no_database_yet(tmp_path):
    source = tmp_path / "backup.db"
    make_unwritten_db(source)
    target = tmp_path / "new" / "workflows.db"
    target.parent.mkdir()
    result = cli("restore", "--db", target, source)
    assert result.returncode == 0, result.stderr
    assert _mode(target) == 0o600 and counts(target)["workflow_executions"] == 0
    assert sorted(os.listdir(target.parent)) == ["workflows.db"]


def test_restore_refuses_a_source_that_fails_integrity_check(populated, tmp_path):
    damaged = tmp_path / "damaged.db"
    assert cli("backup", "--db", populated.db, damaged).returncode == 0
    _corrupt_middle_pages(damaged)
    target = tmp_path / "target" / "workflows.db"
    make_unwritten_db(target)
    before = target.read_bytes()
    result = cli("restore", "--db", target, damaged)
    assert_one_line_error(result, 1, str(damaged))
    assert target.read_bytes() == before
    assert sorted(os.listdir(target.parent)) == ["workflows.db"]


def test_a_restore_that_fails_late_puts_the_old_file_back(tmp_path, monkeypatch, capsys):
    old = tmp_path / "data" / "workflows.db"
    make_unwritten_db(old)
    conn = sqlite3.connect(old)
    conn.execute(
        "INSERT INTO audit_events (id, event_type, message, timestamp) VALUES ('old', 't', 'm', '2026')"
    )
    conn.commit()
    conn.close()
    source = tmp_path / "backup.db"
    make_unwritten_db(source)

    def fail(db):
        raise sqlite3.DatabaseError("disk I/O error (injected)")

    monkeypatch.setattr(restore_command, "_verify_restored", fail)
    monkeypatch.setattr(cli_module, "configure_logging", lambda *args: None)  # leave pytest's logging be
    code = cli_module.main(["restore", "--db", str(old), str(source)])
    assert code == 1
    assert "the old file is back" in capsys.readouterr().err
    assert counts(old)["audit_events"] == 1
    assert sorted(os.listdir(old.parent)) == ["workflows.db"]


@pytest.mark.parametrize("make", [None, make_unwritten_db])
def test_restore_refuses_a_target_that_is_not_a_database_unless_forced(tmp_path, make):
    source = tmp_path / "backup.db"
    make_unwritten_db(source)
    target = tmp_path / "data" / "workflows.db"
    target.parent.mkdir()
    target.write_text("precious notes, not a database\n")
    result = cli("restore", "--db", target, source)
    assert_one_line_error(result, 1, "not a see-persistence database", "--force")
    assert target.read_text() == "precious notes, not a database\n"
    forced = cli("restore", "--db", target, source, "--force")
    assert forced.returncode == 0, forced.stderr
    assert counts(target)["workflow_executions"] == 0
    (replaced,) = _replaced_files(target)
    assert replaced.read_text() == "precious notes, not a database\n"
