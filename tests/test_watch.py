"""Live views with real processes: a Watcher sees committed changes in order, once, or a Resync."""

from __future__ import annotations

import selectors
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import wait_until
from watch_support import ITEM_TIMEOUT_S, collect

from see_persistence import Change, ChangeKind, Client, Reader, Resync, ResyncCause, Watcher


def _rest_of_the_notice(watcher: Watcher) -> list[Change | Resync]:
    """What is still coming once `done` said enough: the other changes of that last notice.

    A commit's changes are listed in the order its batch applied them, and a batch applies log
    appends at its end: the task_log changes of a commit come after its workflows' last status.
    """
    rest: list[Change | Resync] = []
    while (item := watcher.get(timeout=1.0)) is not None:
        rest.append(item)
    return rest


def _started(watcher: Watcher) -> None:
    """The first item is STARTED; then wait until the subscription reaches the writer (a notice)."""
    first = watcher.get(timeout=ITEM_TIMEOUT_S)
    assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
    # Two: the receiving thread counts a notice before it acts on it, and the second arrives
    # only once the first was handled.
    wait_until(lambda: watcher.stats.notices > 1, 20, "the watcher's first notices")
    # A commit of the writer's own (a heartbeat) between STARTED and the subscription reaching
    # the writer is a notice the socket joined too late for: one MISSED, before the test's part.
    early = watcher.poll()
    assert all(isinstance(i, Resync) and i.cause == ResyncCause.MISSED for i in early), early


def _workflows_completed(ids: set[str]) -> Callable[[list[Change | Resync]], bool]:
    def done(items: list[Change | Resync]) -> bool:
        changes = [i for i in items if isinstance(i, Change)]
        return ids <= {c.id for c in changes if c.kind == "workflow" and c.status == "completed"}

    return done


def _check_order_and_once(items: list[Change | Resync]) -> None:
    changes = [i for i in items if isinstance(i, Change)]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs), "changes come in commit order"
    keys = [(c.kind, c.id, c.status, c.seq) for c in changes]
    assert len(keys) == len(set(keys)), "each change at most once"


def test_a_watcher_sees_every_change_of_two_client_processes_in_order_once(
    db: Path, writers, clients
) -> None:
    writers(db).wait_holding_lease()
    with Reader(db).watch() as watcher:
        _started(watcher)
        began_us = time.time_ns() // 1000
        first = clients(db, "--label", "a", "--workflows", "3")
        second = clients(db, "--label", "b", "--workflows", "3")
        ids = set(first.finish()["workflow_ids"]) | set(second.finish()["workflow_ids"])

        def done(items: list[Change | Resync]) -> bool:
            resynced = any(isinstance(i, Resync) for i in items)
            return resynced or _workflows_completed(ids)(items)

        items = collect(watcher, done)
        items += _rest_of_the_notice(watcher)
    _check_order_and_once(items)
    # Each change says when its commit returned, on the writer's wall clock (the same machine's).
    ended_us = time.time_ns() // 1000
    for change in (i for i in items if isinstance(i, Change)):
        assert change.committed_at_us is not None and began_us <= change.committed_at_us <= ended_us
    if not any(isinstance(i, Resync) for i in items):
        changes = [i for i in items if isinstance(i, Change)]
        created = {c.id for c in changes if c.kind == "workflow" and c.status == "pending"}
        # A workflow created and completed within one commit is one change, with its last status.
        assert ids <= created | {c.id for c in changes if c.kind == "workflow"}
        kinds = {c.kind for c in changes}
        assert kinds >= {"workflow", "task", "task_log", "audit_event", "instance"}, (kinds, changes)
        tasks = [c for c in changes if c.kind == "task"]
        assert all(c.workflow_id in ids for c in tasks)


def test_across_a_sigkill_takeover_a_watcher_gets_new_writer_then_the_new_changes(
    db: Path, writers, clients
) -> None:
    first = writers(db)
    first.wait_holding_lease()
    standby = writers(db, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait")
    with Reader(db).watch() as watcher:
        _started(watcher)
        first.signal(signal.SIGKILL)
        assert first.wait_exit() == -signal.SIGKILL
        standby.wait_holding_lease(timeout=30)
        # The new writer's first notice the watcher gets (a heartbeat's, or a batch's whose
        # changes the resync then covers) says another writer numbers the commits now. A
        # watcher that heard nothing for NOTICE_SILENCE_S (the old writer's silence before the
        # takeover) polls the file instead, and finds the new writer's feed id in the lease row.
        resyncs = collect(watcher, lambda items: any(isinstance(i, Resync) for i in items))
        assert [i.cause for i in resyncs if isinstance(i, Resync)] == [ResyncCause.NEW_WRITER]
        # Until it hears the new writer, what moves the file (its heartbeats) is not vouched for.
        heard = watcher.stats.notices
        wait_until(lambda: watcher.stats.notices > heard, 20, "a notice of the new writer")
        leftover = watcher.poll()
        assert all(isinstance(i, Resync) and i.cause == ResyncCause.OTHER_WRITER for i in leftover), leftover
        ids = set(clients(db, "--label", "after", "--workflows", "2").finish()["workflow_ids"])
        after = collect(watcher, _workflows_completed(ids))
    assert not any(isinstance(i, Resync) for i in after)
    _check_order_and_once(after)


def test_with_no_writer_a_direct_write_to_the_file_is_noticed(db: Path, writers, clients) -> None:
    writer = writers(db)
    writer.wait_holding_lease()
    assert clients(db, "--workflows", "1").finish()["flushed"] is True
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    with Reader(db).watch(poll_interval_s=0.1) as watcher:
        first = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute(
            "INSERT INTO audit_events (id, event_type, message, timestamp)"
            " VALUES ('direct-1', 'script', 'written directly', '2026-01-01T00:00:00.000000+00:00')"
        )
        conn.close()
        item = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(item, Resync) and item.cause == ResyncCause.OTHER_WRITER
        assert watcher.stats.polling and watcher.stats.data_version_polls > 0
        # A writer's takeover commit (a new feed id in the lease row) whose notices this
        # watcher has not heard: a new writer, not another program.
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE writer_lease SET feed_id = feed_id + 1, epoch = epoch + 1")
        conn.close()
        item = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(item, Resync) and item.cause == ResyncCause.NEW_WRITER, item


def test_filters_deliver_only_what_was_asked_for(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    reader = Reader(db)
    with Client(db) as client:
        wid = client.create_workflow("watched")
        other = client.create_workflow("not watched")
        assert client.flush(timeout=30)
        with reader.watch(workflow_id=wid) as by_workflow, reader.watch(kinds=["audit_event"]) as by_kind:
            _started(by_workflow)
            _started(by_kind)
            for target in (other, wid):
                client.update_workflow_status(target, "running")
                tid = client.create_task(target, "t", execution_order=1)
                client.update_task_status(tid, "completed")
                client.log_audit_event("step", "e", workflow_id=target)
                client.update_workflow_status(target, "completed")
            assert client.flush(timeout=30)
            wanted = {ChangeKind.WORKFLOW, ChangeKind.TASK, ChangeKind.AUDIT_EVENT}
            mine = collect(
                by_workflow,
                lambda items: (
                    _workflows_completed({wid})(items)
                    and wanted <= {i.kind for i in items if isinstance(i, Change)}
                ),
            )
            audits = collect(
                by_kind,
                lambda items: (
                    sum(isinstance(i, Change) for i in items) >= 2
                    or any(isinstance(i, Resync) for i in items)
                ),
            )
    changes = [i for i in mine if isinstance(i, Change)]
    assert changes and all(c.workflow_id == wid for c in changes)
    assert all(i.kind == "audit_event" for i in audits if isinstance(i, Change))


def test_fileno_is_readable_while_items_wait_and_poll_drains(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    with Reader(db).watch() as watcher, selectors.DefaultSelector() as selector:
        selector.register(watcher.fileno(), selectors.EVENT_READ)
        assert selector.select(timeout=ITEM_TIMEOUT_S), "STARTED makes it readable"
        assert selector.select(timeout=0), "still readable: level-triggered"
        items = watcher.poll()
        assert items and isinstance(items[0], Resync)
        assert watcher.pending() == 0
        assert not selector.select(timeout=0) or watcher.pending() > 0


def test_more_than_max_pending_becomes_one_overflow_resync(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    with Client(db) as client, Reader(db).watch(max_pending=3) as watcher:
        wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice")
        for n in range(20):
            client.create_workflow(f"w{n}")
            assert client.flush(timeout=30)  # one commit each: no coalescing
        wait_until(lambda: watcher.stats.overflowed > 0, 20, "an overflow")
        items = watcher.poll()
    assert len(items) <= 3
    assert any(isinstance(i, Resync) and i.cause == ResyncCause.OVERFLOW for i in items)


def test_a_watcher_on_a_missing_file_starts_once_it_exists(db: Path, writers) -> None:
    with Reader(db).watch(poll_interval_s=0.1) as watcher:
        assert watcher.get(timeout=0.3) is None
        writers(db).wait_holding_lease()
        first = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED


def test_close_ends_a_waiting_get(db: Path) -> None:
    watcher = Reader(db).watch()
    closer = threading.Timer(0.2, watcher.close)
    closer.start()
    assert watcher.get() is None
    closer.join()
    assert list(watcher) == []


def test_a_file_put_in_the_database_s_place_is_a_file_replaced_resync(db: Path, writers, clients) -> None:
    writer = writers(db)
    writer.wait_holding_lease()
    assert clients(db, "--workflows", "1").finish()["flushed"] is True
    writer.signal(signal.SIGTERM)
    assert writer.wait_exit() == 0
    copy = db.with_name("copy.db")
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()
    with Reader(db).watch(poll_interval_s=0.1) as watcher:
        first = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
        copy.replace(db)  # what a restore does, in the end
        item = watcher.get(timeout=ITEM_TIMEOUT_S)
    assert isinstance(item, Resync) and item.cause == ResyncCause.FILE_REPLACED
