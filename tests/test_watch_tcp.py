"""Live views over TCP with CURVE: real writer and client processes, a Watcher in this process.

The writers listen on TCP only (no ipc socket exists to fall back on); the watcher finds the
writer's PUB endpoint and key in the lease row, as a Client does.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
from conftest import wait_until
from watch_support import ITEM_TIMEOUT_S, collect, completed

from see_persistence import Change, Reader, Resync, ResyncCause

LISTEN = ("--listen", "tcp://127.0.0.1:0")


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """The key directory the writer and the allowed processes share (created on first use)."""
    return tmp_path / "keys"


@pytest.fixture
def tcp_env(keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """TCP for this process (its Watchers) and the processes it starts."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(keys_dir))
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    return dict(os.environ)


def _tcp_writer_listening(db: Path, writers, env: dict[str, str], *extra: str):
    writer = writers(db, *LISTEN, *extra, env=env)
    if "--standby" not in extra:
        writer.wait_holding_lease()
        _listening_on_tcp_only(db)
    return writer


def _listening_on_tcp_only(db: Path) -> None:
    endpoints = wait_until(
        lambda: Reader(db).get_writer_status().endpoints, 20, "the writer to record its endpoints"
    )
    assert all(pull.startswith("tcp://") and pub.startswith("tcp://") for pull, pub in endpoints)


def test_a_watcher_over_tcp_sees_every_commit_in_order_once(db, writers, clients, tcp_env) -> None:
    _tcp_writer_listening(db, writers, tcp_env)
    with Reader(db).watch() as watcher:
        first = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
        wait_until(lambda: watcher.stats.notices > 0, 20, "the watcher's first notice over TCP")
        reports = [
            clients(db, "--label", label, "--workflows", "4", env=tcp_env).finish() for label in ("a", "b")
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


def test_a_watcher_over_tcp_follows_the_lease_to_a_standby_that_took_over(
    db, writers, clients, tcp_env
) -> None:
    first_writer = _tcp_writer_listening(db, writers, tcp_env)
    with Reader(db).watch() as watcher:
        started = watcher.get(timeout=ITEM_TIMEOUT_S)
        assert isinstance(started, Resync) and started.cause == ResyncCause.STARTED
        wait_until(lambda: watcher.stats.notices > 0, 20, "the first writer's notices")
        standby = _tcp_writer_listening(db, writers, tcp_env, "--standby")
        wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
        first_writer.signal(signal.SIGKILL)
        first_writer.wait_exit()
        standby.wait_holding_lease()
        # The takeover is a gap the watcher reports (NEW_WRITER, or OTHER_WRITER when its polling
        # saw the new lease row first); then changes come again as Changes, from notices: the
        # standby listens on ports of its own, so only a watcher that read the lease again hears it.
        items = collect(watcher, lambda got: any(isinstance(i, Resync) for i in got))
        assert {i.cause for i in items if isinstance(i, Resync)} <= {
            ResyncCause.NEW_WRITER,
            ResyncCause.OTHER_WRITER,
        }
        report = clients(db, "--label", "after", "--workflows", "2", env=tcp_env).finish()
        assert report["flushed"]
        collect(watcher, completed(set(report["workflow_ids"])))
        assert watcher.stats.refused is None


def test_a_watcher_with_an_unknown_key_is_refused_and_says_so(
    db, writers, clients, tcp_env, tmp_path, caplog
) -> None:
    writer = _tcp_writer_listening(db, writers, tcp_env)
    caplog.set_level(logging.WARNING, logger="see_persistence.reader")
    stranger_keys = tmp_path / "stranger-keys"  # a key pair the writer never allowed
    with Reader(db).watch(keys_dir=stranger_keys) as watcher:
        items = collect(
            watcher, lambda got: any(isinstance(i, Resync) and i.cause == ResyncCause.REFUSED for i in got)
        )
        assert isinstance(items[0], Resync) and items[0].cause == ResyncCause.STARTED
        assert watcher.stats.refused is not None and "refused this watcher's key" in watcher.stats.refused
        assert watcher.stats.notices == 0
        assert any("refused this watcher's key" in r.getMessage() for r in caplog.records)
        wait_until(lambda: "client key not on the allow-list" in writer.log(), 20, "the writer's refusal")
        # Refused, it still sees that the file changed (polling), as one Resync, never as silence.
        report = clients(db, "--workflows", "1", env=tcp_env).finish()
        assert report["flushed"]
        collect(
            watcher,
            lambda got: any(isinstance(i, Resync) and i.cause == ResyncCause.OTHER_WRITER for i in got),
        )
        assert watcher.stats.notices == 0
