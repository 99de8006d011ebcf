"""Every command on a missing file, a text file, a foreign SQLite file or a bad argument:
one line on stderr, a nonzero exit code, never a traceback."""

from __future__ import annotations

import os

import pytest
from cli_support import assert_one_line_error, cli, make_foreign_db, make_text_file, make_unwritten_db

BAD_FILES = {
    "missing": None,
    "text": make_text_file,
    "foreign": make_foreign_db,
}

# Each command with the database under test in the place of DB, and OUT a path it may write.
COMMANDS = {
    "status": ["status", "--db", "DB"],
    "status-json": ["status", "--json", "--db", "DB"],
    "status-watch": ["status", "--watch", "--db", "DB"],
    "tail": ["tail", "--db", "DB"],
    "tail-follow": ["tail", "--follow", "--db", "DB"],
    "query": ["query", "--db", "DB", "SELECT 1"],
    "query-csv": ["query", "--csv", "--db", "DB", "SELECT 1"],
    "backup": ["backup", "--db", "DB", "OUT"],
    "restore": ["restore", "--db", "OUT", "DB"],  # the bad file as the backup to restore
    "prune": ["prune", "--older-than", "30d", "--db", "DB"],
    "prune-dry-run": ["prune", "--older-than", "30d", "--dry-run", "--db", "DB"],
    "check": ["check", "--db", "DB"],
    "check-json": ["check", "--json", "--db", "DB"],
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_that_is_not_ours_is_one_line_and_exit_1(tmp_path, command, kind):
    bad = tmp_path / f"{kind}.db"
    if BAD_FILES[kind] is not None:
        BAD_FILES[kind](bad)
    before = bad.read_bytes() if bad.exists() else None
    out = tmp_path / "out" / "workflows.db"
    out.parent.mkdir()
    argv = [str(bad) if a == "DB" else str(out) if a == "OUT" else a for a in COMMANDS[command]]
    result = cli(*argv, timeout=30)
    line = assert_one_line_error(result, 1, str(bad))
    assert line.startswith(f"see-persistence {argv[0]}: ")
    assert result.stdout == ""
    assert os.listdir(out.parent) == []  # nothing written anywhere
    if before is None:
        assert not bad.exists()  # a missing file is not created
    else:
        assert bad.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == sorted([bad.name, "out"])  # no -wal or -shm left beside it


@pytest.mark.parametrize("kind", ["text", "foreign"])
def test_restore_over_a_file_that_is_not_ours_is_refused(tmp_path, kind):
    source = tmp_path / "backup.db"
    make_unwritten_db(source)
    target = tmp_path / "data" / "workflows.db"
    BAD_FILES[kind](target)
    before = target.read_bytes()
    assert_one_line_error(cli("restore", "--db", target, source), 1, str(target), "--force")
    assert target.read_bytes() == before


def test_a_directory_as_database_is_one_line(tmp_path):
    for argv in (["status"], ["tail"], ["query", "SELECT 1"], ["check"], ["prune", "--older-than", "1d"]):
        assert_one_line_error(cli(*argv, "--db", tmp_path), 1, "directory")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["status", "--bogus"],
        ["status", "--watch", "--interval", "0"],
        ["status", "--watch", "--interval", "nan"],
        ["tail", "-n", "-1"],
        ["tail", "-n", "many"],
        ["query"],
        ["query", "--json", "--csv", "SELECT 1"],
        ["backup"],
        ["backup", "--step-pages", "0", "OUT"],
        ["restore"],
        ["prune"],
        ["prune", "--older-than", "30"],
        ["prune", "--older-than", "30d", "--status", "bogus"],
        ["prune", "--older-than", "30d", "--timeout", "0"],
        ["--log-format", "xml", "status"],
        ["--log-level", "LOUD", "status"],
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(tmp_path, argv):
    db = tmp_path / "workflows.db"
    make_unwritten_db(db)
    argv = [str(tmp_path / "out.db") if a == "OUT" else a for a in argv]
    env = {**os.environ, "SEE_PERSISTENCE_DB": str(db)}
    result = cli(*argv, env=env, timeout=30)
    assert_one_line_error(result, 2)
    assert not (tmp_path / "out.db").exists()
