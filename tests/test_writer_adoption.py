"""The writer adopts no stranger's file: `see-persistence writer` refuses, naming the path,
a foreign SQLite file (unless --adopt), a file that is not SQLite, and a missing directory
other than the default one; it takes a new path, an empty file and the seed's file."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, cli, make_foreign_db, make_text_file, stop_writer

from see_persistence import Reader, Status
from see_persistence.protocol import schema
from see_persistence.writer import Writer
from see_persistence.writer.storage import DatabaseRefused

REFUSAL_TIMEOUT_S = 30.0  # a refused writer exits at once; the bound is for a loaded machine


def _tables(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def _make_seed_db(path: Path) -> None:
    """A file as the app's Rust core leaves it: the seed's tables and version 1, nothing of ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in dict(schema.UPGRADE_STEPS)[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at)"
        " VALUES ('seed-wf', 'from the seed', 'completed', '2026-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()


def _refused(db: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    """Run `see-persistence writer --db DB`, expect one line and exit 1; return the line."""
    result = cli("writer", "--db", db, *extra, timeout=REFUSAL_TIMEOUT_S, env=env)
    line = assert_one_line_error(result, 1)
    assert line.startswith("see-persistence writer: "), line
    return line


def test_a_foreign_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "recipes.db"
    make_foreign_db(db)
    before = db.read_bytes()
    line = _refused(db)
    assert str(db) in line and "recipes" in line and "--adopt" in line
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["recipes.db"]  # no -wal, -shm or log beside it


def test_a_foreign_file_is_adopted_with_the_flag_and_stays_adopted(tmp_path, writers, clients) -> None:
    db = tmp_path / "recipes.db"
    make_foreign_db(db)
    writer = writers(db, "--adopt")
    writer.wait_holding_lease()
    assert "adopting" in writer.log() and "recipes" in writer.log()
    report = clients(db, "--workflows", "2").finish()
    assert report["flushed"] is True
    stop_writer(writer)
    assert {"recipes", "workflow_executions", "writer_lease"} <= set(_tables(db))
    with Reader(db) as reader:
        assert reader.query("SELECT name, minutes FROM recipes") == [("bread", 240)]  # theirs, untouched
        assert len(reader.get_workflows_for_instance(report["instance_id"])) == 2
    # Adopted once is adopted: the next writer (one a GUI spawns has no --adopt) takes the file.
    again = writers(db)
    again.wait_holding_lease()
    stop_writer(again)


def test_the_writer_class_refuses_a_foreign_file_unless_told_to_adopt(tmp_path: Path) -> None:
    db = tmp_path / "recipes.db"
    make_foreign_db(db)
    before = db.read_bytes()
    with pytest.raises(DatabaseRefused, match="recipes"):
        Writer(db).initialize()
    assert db.read_bytes() == before
    writer = Writer(db, adopt=True)
    try:
        assert writer.initialize()
    finally:
        writer.shutdown()
    assert "writer_lease" in _tables(db)


def test_a_file_that_is_not_sqlite_is_named_in_the_error(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    make_text_file(db)
    before = db.read_bytes()
    line = _refused(db)
    assert f"{db} is not a see-persistence database" in line, line
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["notes.db"]


def test_a_missing_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "wf.db"
    line = _refused(db)
    assert str(db.parent) in line and "does not exist" in line
    assert os.listdir(tmp_path) == []


def test_a_path_from_the_environment_variable_gets_no_directory_created(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "wf.db"
    env = {**os.environ, "SEE_PERSISTENCE_DB": str(db), "HOME": str(tmp_path / "home")}
    result = cli("writer", timeout=REFUSAL_TIMEOUT_S, env=env)
    line = assert_one_line_error(result, 1, str(db.parent), "does not exist")
    assert line.startswith("see-persistence writer: ")
    assert os.listdir(tmp_path) == []


def test_the_default_directory_is_created_owner_only(tmp_path: Path, writers) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "SEE_PERSISTENCE_DB"}
    env["HOME"] = str(home)
    db = home / ".s_e_e" / "workflows.db"
    writer = writers(db, env=env)
    writer.wait_holding_lease()
    stop_writer(writer)
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
    assert "writer_lease" in _tables(db)


@pytest.mark.parametrize("kind", ["parent is a file", "path is a directory"])
def test_a_path_that_cannot_be_a_database_file_is_named(tmp_path: Path, kind: str) -> None:
    if kind == "parent is a file":
        (tmp_path / "plain").write_text("x")
        db = tmp_path / "plain" / "wf.db"
        named = tmp_path / "plain"
    else:
        db = named = tmp_path / "adir"
        db.mkdir()
    line = _refused(db)
    assert str(named) in line and "directory" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file")
def test_a_file_the_writer_may_not_write_is_named(tmp_path: Path) -> None:
    db = tmp_path / "wf.db"
    _make_seed_db(db)
    os.chmod(db, 0o400)
    line = _refused(db)
    assert str(db) in line and "permission denied" in line, line


def test_the_seeds_file_is_accepted_and_upgraded(tmp_path: Path, writers, clients) -> None:
    db = tmp_path / "seed.db"
    _make_seed_db(db)
    writer = writers(db)
    writer.wait_holding_lease()
    report = clients(db, "--workflows", "1").finish()
    assert report["flushed"] is True
    stop_writer(writer)
    with Reader(db) as reader:
        assert reader.get_workflow("seed-wf") is not None
        assert reader.query("SELECT MAX(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]
        runs = reader.get_workflows_for_instance(report["instance_id"])
        assert [run.status for run in runs] == [Status.COMPLETED]


def test_an_empty_file_is_accepted(tmp_path: Path, writers) -> None:
    db = tmp_path / "empty.db"
    db.touch(mode=0o600)
    writer = writers(db)
    writer.wait_holding_lease()
    stop_writer(writer)
    assert "writer_lease" in _tables(db)
