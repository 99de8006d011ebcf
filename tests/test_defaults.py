"""The process-wide Client and Reader (configure / get_client / get_reader), with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

import see_persistence
from see_persistence import Client, DefaultsInUse, Reader

THREADS = 8
PROGRAM_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def fresh_defaults(writers) -> Iterator[None]:
    """Each test starts with no handles and the default settings, and leaves the same."""
    # Asking for `writers` sets it up first, so it is torn down last: the default Client closes
    # while the test's writer still runs, and its goodbye commits instead of waiting out the
    # close's deadline for a writer already killed.
    see_persistence.close_defaults(timeout=0.1)
    see_persistence.configure()
    yield
    see_persistence.close_defaults(timeout=5.0)
    see_persistence.configure()


def _run(program: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `program` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program), *args],
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT_S,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_thread_gets_the_same_client_and_reader(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    see_persistence.configure(db)
    start = threading.Barrier(THREADS)
    got: list[tuple[Client, Reader, str]] = []
    lock = threading.Lock()

    def gui_thread(n: int) -> None:
        start.wait(30)  # all at once: the first get_client() is raced for
        client, reader = see_persistence.get_client(), see_persistence.get_reader()
        wid = client.create_workflow(f"thread-{n}")
        with lock:
            got.append((client, reader, wid))

    threads = [threading.Thread(target=gui_thread, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(got) == THREADS
    assert len({id(client) for client, _, _ in got}) == 1
    assert len({id(reader) for _, reader, _ in got}) == 1
    client, reader, _ = got[0]
    assert client is see_persistence.get_client() and reader is see_persistence.get_reader()
    assert client.db_path == reader.db_path == db
    assert client.flush(timeout=30)
    assert all(reader.get_workflow(wid) is not None for _, _, wid in got)
    assert {w.instance_id for w in reader.list_workflows()} == {client.instance_id}


def test_configure_once_the_handles_exist_raises_unless_nothing_changes(db: Path) -> None:
    other = db.with_name("other.db")
    see_persistence.configure(other)
    see_persistence.configure(db)  # before any handle: the last configure wins
    reader = see_persistence.get_reader()
    assert reader.db_path == db
    see_persistence.configure(db)  # the same settings: nothing to change
    with pytest.raises(DefaultsInUse, match="configure once at start-up"):
        see_persistence.configure(other)
    with pytest.raises(DefaultsInUse):
        see_persistence.configure(db, spawn_writer=True)
    with pytest.raises(ValueError, match="buffer_limit"):
        see_persistence.configure(db, buffer_limit=0)
    assert see_persistence.get_reader() is reader
    assert see_persistence.close_defaults() is True  # no Client was made: nothing to flush
    see_persistence.configure(other)
    assert see_persistence.get_reader().db_path == other


def test_a_program_that_exits_without_closing_has_its_records_committed(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    report = _run(
        """
        import json, sys
        import see_persistence

        see_persistence.configure(sys.argv[1])
        client = see_persistence.get_client()
        ids = [client.create_workflow(f"before-exit-{n}") for n in range(50)]
        print(json.dumps({"ids": ids, "instance_id": client.instance_id}), flush=True)
        # no flush, no close: the interpreter's exit must do both
        """,
        str(db),
    )
    reader = Reader(db)
    found = reader.query("SELECT id FROM workflow_executions WHERE workflow_name LIKE 'before-exit-%'")
    assert {row[0] for row in found} == set(report["ids"])  # type: ignore[arg-type]
    instance = reader.get_instance(str(report["instance_id"]))
    assert instance is not None and instance.ended_at is not None, "closed, not abandoned"


def test_get_reader_reads_what_get_client_flushed_on_the_default_database(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    # No configure(): both handles take $SEE_PERSISTENCE_DB, as Client() and Reader() do.
    report = _run(
        """
        import json
        import see_persistence

        client = see_persistence.get_client()
        wid = client.create_workflow("through the defaults")
        flushed = client.flush(timeout=30)
        reader = see_persistence.get_reader()
        workflow = reader.get_workflow(wid)
        print(json.dumps({
            "flushed": flushed,
            "name": workflow.workflow_name if workflow else None,
            "paths": [str(client.db_path), str(reader.db_path)],
        }))
        """,
        env={**os.environ, "SEE_PERSISTENCE_DB": str(db)},
    )
    assert report == {"flushed": True, "name": "through the defaults", "paths": [str(db), str(db)]}


def test_a_forked_child_records_through_the_default_client_as_its_own_instance(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    see_persistence.configure(db)
    client = see_persistence.get_client()
    client.create_workflow("the parent's")
    assert client.flush(timeout=30)
    answer = db.with_name("child.json")
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            child_client = see_persistence.get_client()
            wid = child_client.create_workflow("the child's")
            flushed = child_client.flush(timeout=30)
            answer.write_text(
                json.dumps(
                    {
                        "same_object": child_client is client,
                        "instance_id": child_client.instance_id,
                        "flushed": flushed,
                        "wid": wid,
                    }
                )
            )
            code = 0
        finally:
            os._exit(code)

    def exited() -> int | None:
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) + 1000 if done_pid else None  # +1000: 0 is falsy

    try:
        assert wait_until(exited, PROGRAM_TIMEOUT_S, "the forked child") == 1000
    except AssertionError:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    report = json.loads(answer.read_text())
    assert report["flushed"] is True and report["same_object"] is True
    assert report["instance_id"] != client.instance_id
    workflow = see_persistence.get_reader().get_workflow(report["wid"])
    assert workflow is not None and workflow.instance_id == report["instance_id"]
