"""Live views through a callback: Reader.watch(on_change=...) with real writer and client processes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import wait_until

from see_persistence import Change, Client, Reader, Resync, ResyncCause, WatcherHasCallback

ITEM_TIMEOUT_S = 30.0
Done = Callable[[list[Change | Resync]], bool]


class Recorder:
    """An on_change callback that keeps every item and the thread it was called on."""

    def __init__(self) -> None:
        self.items: list[Change | Resync] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, item: Change | Resync) -> None:
        with self._lock:
            self.items.append(item)
            self.threads.add(threading.get_ident())

    def snapshot(self) -> list[Change | Resync]:
        with self._lock:
            return list(self.items)

    def wait_for(self, done: Done, what: str) -> list[Change | Resync]:
        """The items so far, once `done(items)` is true (the deadline fails the test)."""
        return wait_until(lambda: (items := self.snapshot()) and done(items) and items, ITEM_TIMEOUT_S, what)


def _completed(ids: set[str]) -> Done:
    def done(items: list[Change | Resync]) -> bool:
        changes = [i for i in items if isinstance(i, Change) and i.kind == "workflow"]
        return ids <= {c.id for c in changes if c.status == "completed"}

    return done


def _resynced_or(done: Done) -> Done:
    def either(items: list[Change | Resync]) -> bool:
        return any(isinstance(i, Resync) and i.cause != ResyncCause.STARTED for i in items) or done(items)

    return either


def test_the_callback_sees_every_change_of_a_client_process_in_commit_order(
    db: Path, writers, clients
) -> None:
    writers(db).wait_holding_lease()
    recorder = Recorder()
    with Reader(db).watch(on_change=recorder) as watcher:
        recorder.wait_for(lambda items: True, "the STARTED resync")
        wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice")
        ids = set(clients(db, "--label", "cb", "--workflows", "4").finish()["workflow_ids"])
        items = recorder.wait_for(_resynced_or(_completed(ids)), "every workflow completed")
    first = items[0]
    assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
    assert len(recorder.threads) == 1 and threading.get_ident() not in recorder.threads
    changes = [i for i in items if isinstance(i, Change)]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs), "changes come in commit order"
    keys = [(c.kind, c.id, c.status, c.seq) for c in changes]
    assert len(keys) == len(set(keys)), "each change at most once"
    if not any(isinstance(i, Resync) for i in items[1:]):
        assert {c.kind for c in changes} >= {"workflow", "task", "task_log", "audit_event"}
        assert all(c.workflow_id in ids for c in changes if c.kind == "task")


def test_a_raising_callback_is_logged_and_keeps_receiving(
    db: Path, writers, caplog: pytest.LogCaptureFixture
) -> None:
    writers(db).wait_holding_lease()
    recorder = Recorder()

    def raising(item: Change | Resync) -> None:
        recorder(item)
        raise RuntimeError(f"the GUI choked on {item}")

    caplog.set_level(logging.ERROR, logger="see_persistence.reader")
    with Client(db) as client, Reader(db).watch(on_change=raising) as watcher:
        recorder.wait_for(lambda items: True, "the STARTED resync")
        wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice")
        ids = set()
        for n in range(3):
            wid = client.create_workflow(f"raising-{n}")
            client.update_workflow_status(wid, "completed")
            ids.add(wid)
            assert client.flush(timeout=30)
        recorder.wait_for(_resynced_or(_completed(ids)), "the workflows after the raises")
        calls = len(recorder.snapshot())
        assert watcher.stats.callback_errors >= calls - 1  # the last call's count may still be on its way
    raised = [r for r in caplog.records if r.name == "see_persistence.reader" and r.exc_info]
    assert raised, "each raise is logged with its traceback"
    assert "the GUI choked" in str(raised[0].exc_info[1])  # type: ignore[index]
    assert calls >= 2


def test_close_from_inside_the_callback_returns_and_ends_the_calls(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    calls: list[Change | Resync] = []
    closed = threading.Event()
    answers: list[bool] = []
    assigned = threading.Event()

    def close_at_once(item: Change | Resync) -> None:
        # The first call (Resync STARTED) can come before watch() has returned to the test.
        assigned.wait(ITEM_TIMEOUT_S)
        calls.append(item)
        answers.append(watcher.close())
        closed.set()

    watcher = Reader(db).watch(on_change=close_at_once)
    assigned.set()
    assert closed.wait(ITEM_TIMEOUT_S), "close() from inside the callback returned"
    assert answers == [True]
    callback_thread = watcher._callback_thread
    assert callback_thread is not None
    callback_thread.join(ITEM_TIMEOUT_S)
    assert not callback_thread.is_alive()
    assert not watcher._thread.is_alive()
    with Client(db) as client:  # a commit after the close reaches no one
        client.create_workflow("after the close")
        assert client.flush(timeout=30)
    assert len(calls) == 1 and isinstance(calls[0], Resync)
    assert watcher.close() is True  # a second close does nothing


def test_close_from_another_thread_waits_for_the_call_under_way(db: Path, writers) -> None:
    writers(db).wait_holding_lease()
    inside = threading.Event()
    release = threading.Event()
    calls: list[Change | Resync] = []

    def slow(item: Change | Resync) -> None:
        calls.append(item)
        inside.set()
        release.wait(ITEM_TIMEOUT_S)

    watcher = Reader(db).watch(on_change=slow)
    assert inside.wait(ITEM_TIMEOUT_S)
    # The callback waits on this thread: a close() that waited without bound would hang here.
    assert watcher.close(timeout=0.2) is False
    release.set()
    callback_thread = watcher._callback_thread
    assert callback_thread is not None
    callback_thread.join(ITEM_TIMEOUT_S)
    assert not callback_thread.is_alive()
    assert len(calls) == 1


def test_a_watcher_with_a_callback_refuses_the_other_ways_to_wait(db: Path) -> None:
    with Reader(db).watch(on_change=lambda item: None) as watcher:
        for take in (lambda: watcher.get(timeout=0), watcher.poll, watcher.fileno, lambda: iter(watcher)):
            with pytest.raises(WatcherHasCallback, match="on_change"):
                take()
        with pytest.raises(WatcherHasCallback):
            asyncio.run(watcher.aget(timeout=0))
    with pytest.raises(TypeError, match="callable"):
        Reader(db).watch(on_change="not a function")  # type: ignore[arg-type]
