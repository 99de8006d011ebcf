"""The change feed on PostgreSQL: `Reader("postgresql://...").watch()` over the writer's TCP feed.

Real writer and client processes on the session's server (tests/conftest_postgres.py); the
Watcher runs in this process and finds the writer's PUB endpoint and key in the lease row.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import test_postgresql_writer as pg_writer_tests
from cli_support import LineReader
from conftest import wait_until
from test_postgresql_writer import wait_serving
from watch_support import ITEM_TIMEOUT_S, collect, completed

from see_persistence import Change, Client, Reader, Resync, ResyncCause

pytest.importorskip("psycopg")


# That module's fixtures, for the tests here to ask for by name.
tcp_env = pg_writer_tests.tcp_env
pg_writers = pg_writer_tests.pg_writers


def test_a_watcher_on_postgresql_sees_every_commit_of_clients_in_order_once(
    postgres_url, pg_writers, clients, tcp_env
):
    wait_serving(postgres_url, pg_writers(postgres_url))
    with Reader(postgres_url) as reader, reader.watch() as watcher:
        first = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
        wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice over TCP")
        reports = [
            clients(postgres_url, "--label", label, "--workflows", "4", env=tcp_env).finish()
            for label in ("a", "b")
        ]
        assert all(r["flushed"] for r in reports)
        ids = {wid for r in reports for wid in r["workflow_ids"]}
        items = collect(watcher, completed(ids))
        assert not [i for i in items if isinstance(i, Resync)], f"no gap expected: {items}"
        changes = [i for i in items if isinstance(i, Change)]
        seqs = [c.seq for c in changes]
        assert seqs == sorted(seqs)
        keys = [(c.kind, c.id, c.status, c.seq) for c in changes]
        assert len(keys) == len(set(keys))
        rank = {"pending": 0, "running": 1, "completed": 2}
        for wid in ids:  # a commit lists a record's last status in it: a subsequence, in order
            statuses = [rank[c.status] for c in changes if c.kind == "workflow" and c.id == wid]
            assert statuses == sorted(set(statuses)) and statuses[-1] == rank["completed"]
        assert watcher.stats.refused is None


def test_a_client_in_this_process_flushes_and_a_workflow_watcher_sees_its_tasks(
    postgres_url, pg_writers, tcp_env
):
    wait_serving(postgres_url, pg_writers(postgres_url))
    with Client(postgres_url) as client, Reader(postgres_url) as reader:
        wid = client.create_workflow("watched")
        assert client.flush(timeout=30)
        with reader.watch(workflow_id=wid) as watcher:
            started = watcher.get(timeout=ITEM_TIMEOUT_S)
            assert isinstance(started, Resync) and started.cause == ResyncCause.STARTED
            wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice over TCP")
            other = client.create_workflow("not watched")
            tid = client.create_task(wid, "step", execution_order=1)
            client.update_task_status(tid, "running")
            client.append_task_log(tid, "a line")
            client.update_workflow_status(wid, "completed")
            assert client.flush(timeout=30)
            items = collect(
                watcher,
                lambda got: any(
                    isinstance(i, Change) and i.id == wid and i.status == "completed" for i in got
                ),
            )
        assert reader.get_workflow(wid).status == "completed"
    changes = [i for i in items if isinstance(i, Change)]
    assert not [i for i in items if isinstance(i, Resync)], items
    assert other not in {c.id for c in changes}
    assert {c.workflow_id for c in changes} == {wid}
    assert ("task", tid) in {(c.kind, c.id) for c in changes}
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)


def test_a_watcher_on_postgresql_follows_the_lease_to_a_standby_that_took_over(
    postgres_url, pg_writers, clients, tcp_env
):
    first_writer = pg_writers(postgres_url)
    wait_serving(postgres_url, first_writer)
    with Reader(postgres_url) as reader, reader.watch() as watcher:
        started = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(started, Resync) and started.cause == ResyncCause.STARTED
        wait_until(lambda: watcher.stats.notices > 0, 20, "the first writer's notices")
        standby = pg_writers(postgres_url, "--standby")
        wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
        first_writer.signal(signal.SIGKILL)
        first_writer.wait_exit()
        wait_serving(postgres_url, standby)
        # The takeover is a gap the watcher reports as NEW_WRITER (from the new writer's first
        # notice, or from the lease row it reads while no notice comes), after a MISSED if the
        # killed writer committed without publishing; then changes again.
        items = collect(
            watcher, lambda got: any(isinstance(i, Resync) and i.cause == ResyncCause.NEW_WRITER for i in got)
        )
        assert {i.cause for i in items if isinstance(i, Resync)} <= {
            ResyncCause.NEW_WRITER,
            ResyncCause.MISSED,
        }
        # NEW_WRITER may come from the lease row before the watcher's socket reaches the new
        # writer; a commit published before then is a MISSED (the feed's promise), not what this
        # test is about. Once a notice of the new writer came, every commit must come as a change.
        heard = watcher.stats.notices
        wait_until(lambda: watcher.stats.notices > heard, 20, "a notice of the new writer")
        report = clients(postgres_url, "--label", "after", "--workflows", "2", env=tcp_env).finish()
        assert report["flushed"]
        after = collect(watcher, completed(set(report["workflow_ids"])))
        assert not [i for i in after if isinstance(i, Resync)], after
        assert watcher.stats.refused is None


def test_status_watch_on_postgresql_redraws_when_a_client_records(postgres_url, pg_writers, tcp_env):
    wait_serving(postgres_url, pg_writers(postgres_url))
    # An interval far past every deadline here: a new report can only come from the feed.
    watching = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "see_persistence",
            "status",
            "--watch",
            "--json",
            "--interval",
            "3600",
            "--db",
            postgres_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tcp_env,
    )
    try:
        lines = LineReader(watching)
        first = json.loads(lines.wait_for('"rows"')[-1])
        assert first["rows"]["workflow_executions"] == 0
        with Client(postgres_url) as client:
            client.create_workflow("watched on the server")
            assert client.flush(timeout=30)
        seen = lines.wait_for('"workflow_executions": 1')
        assert json.loads(seen[-1])["rows"]["workflow_executions"] == 1
        watching.send_signal(signal.SIGTERM)
        assert watching.wait(timeout=20) == 0
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait(timeout=10)


def test_tail_follow_on_postgresql_prints_each_event_once_in_commit_order_across_a_takeover(
    postgres_url, pg_writers, tcp_env
):
    first_writer = pg_writers(postgres_url)
    wait_serving(postgres_url, first_writer)
    standby = pg_writers(postgres_url, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    argv = [sys.executable, "-m", "see_persistence", "tail", "--follow", "--type", "follow", "-n", "0"]
    following = subprocess.Popen(
        [*argv, "--db", postgres_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tcp_env
    )
    try:
        lines = LineReader(following)
        with Client(postgres_url) as client:
            client.log_audit_event("seed", "before tail started")
            assert client.flush(timeout=30)
            # Wait until tail has read where the events end: then every later one is its to print.
            probe = 0
            printed: list[str] = []

            def probe_printed() -> bool:
                nonlocal probe
                probe += 1
                client.log_audit_event("follow", f"probe-{probe}")
                assert client.flush(timeout=30)
                try:
                    printed.extend(lines.wait_for(f"probe-{probe}", timeout=0.5))
                except AssertionError:
                    return False
                return True

            wait_until(probe_printed, 30, "tail --follow to print a probe event")

            def record(round_number: int) -> list[str]:
                messages = [f"round-{round_number}-event-{n}" for n in range(10)]
                for message in messages:
                    client.log_audit_event("follow", message)
                return messages

            expected = record(0)
            assert client.flush(timeout=30)
            # Recorded, then the writer killed at once: what died inside it uncommitted the
            # client resends to the standby, which skips what was committed.
            expected += record(1)
            first_writer.signal(signal.SIGKILL)
            first_writer.wait_exit()
            expected += record(2)  # while no writer serves
            wait_serving(postgres_url, standby)
            assert client.flush(timeout=30)
            expected += record(3)
            assert client.flush(timeout=30)

            printed += lines.wait_for(expected[-1], timeout=30)
        messages = [line.rstrip("\n").split("  ")[-1] for line in printed]
        assert [m for m in messages if not m.startswith("probe-")] == expected
        assert len(set(messages)) == len(messages), "no event is printed twice"
        following.send_signal(signal.SIGTERM)
        assert following.wait(timeout=20) == 0
        assert following.stderr is not None and "Traceback" not in following.stderr.read()
        assert lines.remaining() == [], "nothing more came after the last event (no late duplicate)"
    finally:
        if following.poll() is None:
            following.kill()
            following.wait(timeout=10)


def test_tail_follow_on_postgresql_catches_up_in_chunks_and_prints_json(postgres_url, pg_writers, tcp_env):
    wait_serving(postgres_url, pg_writers(postgres_url))
    with Client(postgres_url) as client:
        wid = client.create_workflow("followed")
        for n in range(3):
            client.log_audit_event("before", f"before-{n}", workflow_id=wid)
        assert client.flush(timeout=30)
        argv = [sys.executable, "-m", "see_persistence", "tail", "--follow", "--json", "-n", "2"]
        following = subprocess.Popen(
            [*argv, "--workflow", wid, "--db", postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tcp_env,
        )
        try:
            lines = LineReader(following)
            shown = [json.loads(line)["message"] for line in lines.wait_for("before-2")]
            assert shown == ["before-1", "before-2"]
            # More than one chunk of the catch-up (FETCH_ROWS), other workflows' events between.
            many = [f"after-{n}" for n in range(1200)]
            for message in many:
                client.log_audit_event("after", message, workflow_id=wid)
                if message.endswith("0"):
                    client.log_audit_event("after", "elsewhere")
            assert client.flush(timeout=60)
            seen = [json.loads(line) for line in lines.wait_for(many[-1], timeout=60)]
            assert [event["message"] for event in seen] == many
            assert {event["workflow_id"] for event in seen} == {wid}
            following.send_signal(signal.SIGINT)
            assert following.wait(timeout=20) == 0
        finally:
            if following.poll() is None:
                following.kill()
                following.wait(timeout=10)
    with Reader(postgres_url) as reader:
        # Each event carries the number of the commit that inserted it, up to the lease's.
        ((low, high),) = reader.query("SELECT MIN(commit_seq), MAX(commit_seq) FROM audit_events")
        ((lease_seq,),) = reader.query("SELECT commit_seq FROM writer_lease")
    assert 0 < low < high <= lease_seq
