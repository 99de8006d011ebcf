"""Instances on other hosts, inside the writer: host ids from hellos, heartbeats in a batch,
silence on the writer's own clock, clock skew. A real file, the writer's own functions; no
process and no socket (tests/test_remote_instances.py runs real ones over TCP)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from see_persistence import leases
from see_persistence.protocol import codec
from see_persistence.writer import liveness
from see_persistence.writer.batch import SequenceBook, apply_messages, prepare_messages
from see_persistence.writer.lease import WriterLease
from see_persistence.writer.remote import SKEW_WINDOW, RemoteInstances
from see_persistence.writer.storage import open_write_connection, upgrade_schema

pytestmark = pytest.mark.unit

TOKEN = "5f0c2b8e9d41a7736e0b1c9d2f4a6e80"
OTHER_HOST = "another-machine/pid:[1]"
NOW_US = 1_800_000_000_000_000


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    """A file upgraded to the current schema, with this process holding the writer lease."""
    db = tmp_path / "w.db"
    conn = open_write_connection(db)
    upgrade_schema(conn, time.time_ns() // 1000)
    lease = WriterLease(conn, leases.current_process(), "ipc:///nowhere", db)
    assert lease.try_acquire(leases.wall_clock_us()) is None
    return conn


def _hello(instance_id: str, host_id: str | None, pid: int = 4242) -> bytes:
    payload: dict[str, Any] = {
        "pid": pid,
        "process_create_time": 1_700_000_000.25,
        "host": leases.host_name(),
        "at_us": NOW_US,
        "token": TOKEN,
    }
    if host_id is not None:
        payload["host_id"] = host_id
    return codec.encode_message(instance_id, 1, [("hello", payload)], TOKEN)


def _apply(conn: sqlite3.Connection, raws: list[bytes], book: SequenceBook, now_us: int = NOW_US) -> Any:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        result = apply_messages(conn, raws, book, now_us=now_us)
    book.commit(result.committed_seq, result.rejected_total, registered=result.registered)
    return result


def _row(conn: sqlite3.Connection, instance_id: str) -> dict[str, Any]:
    cursor = conn.execute(
        "SELECT host_id, boot_id, state, last_heard_at, clock_skew_us, ended_at FROM instances WHERE id = ?",
        (instance_id,),
    )
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def test_the_lease_records_the_writers_host_id(conn: sqlite3.Connection) -> None:
    assert conn.execute("SELECT host_id FROM writer_lease").fetchone()[0] == leases.host_id()


def test_a_hello_with_another_host_id_has_no_boot_id_and_one_without_is_the_writers(
    conn: sqlite3.Connection,
) -> None:
    _apply(
        conn,
        [_hello("remote", OTHER_HOST), _hello("old-client", None), _hello("local", leases.host_id())],
        SequenceBook(),
    )
    remote, old, local = _row(conn, "remote"), _row(conn, "old-client"), _row(conn, "local")
    assert remote["host_id"] == OTHER_HOST and remote["boot_id"] is None
    assert old["host_id"] == leases.host_id() and old["boot_id"] == leases.boot_id()
    assert local["host_id"] == leases.host_id() and local["boot_id"] == leases.boot_id()
    assert remote["last_heard_at"] is not None


def test_the_pid_sweep_leaves_instances_of_other_hosts_alone(conn: sqlite3.Connection) -> None:
    # pid 4242 with that create time runs nowhere here: the local one is dead, the remote one
    # is not for the pid sweep to judge.
    _apply(conn, [_hello("remote", OTHER_HOST), _hello("local", leases.host_id())], SequenceBook())
    assert [d.instance_id for d in liveness.find_dead_instances(conn)] == ["local"]


def test_a_heartbeat_of_its_owner_is_heard_and_its_clock_sampled(conn: sqlite3.Connection) -> None:
    book = SequenceBook()
    _apply(conn, [_hello("remote", OTHER_HOST)], book)
    sent_at = NOW_US - 3_000_000
    beat = codec.encode_instance_heartbeat("remote", TOKEN, sent_at)
    prepared = prepare_messages(conn, [beat], book, now_us=NOW_US + 1_000_000)
    assert prepared.result.heard == {"remote"} and prepared.result.heartbeats == {"remote": sent_at}
    prepared.clock_skews = {"remote": 4_000_000}
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        result = prepared.apply(conn, book)
    assert result.dead_letters == 0 and result.committed_seq == {}  # nothing sequenced
    row = _row(conn, "remote")
    assert row["clock_skew_us"] == 4_000_000
    assert row["last_heard_at"].startswith("2027-01-15T08:00:01")


def test_a_heartbeat_with_another_token_is_a_dead_letter_and_of_an_unknown_instance_ignored(
    conn: sqlite3.Connection,
) -> None:
    book = SequenceBook()
    _apply(conn, [_hello("remote", OTHER_HOST)], book)
    forged = codec.encode_instance_heartbeat("remote", "f" * 32, NOW_US)
    stranger = codec.encode_instance_heartbeat("nobody", TOKEN, NOW_US)
    garbage = codec.encode_instance_heartbeat("remote", TOKEN, NOW_US)[:-2]  # cut short
    result = _apply(conn, [forged, stranger, garbage], book, NOW_US + 1)
    assert result.heard == set() and result.heartbeats_unknown == 1 and result.dead_letters == 2
    reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert "another token" in reasons[0]
    assert reasons[1].startswith("not msgpack")
    assert conn.execute("SELECT COUNT(*) FROM instances WHERE id = 'nobody'").fetchone()[0] == 0


def test_a_remote_instance_marked_dead_for_silence_is_live_again_once_heard(conn: sqlite3.Connection) -> None:
    book = SequenceBook()
    _apply(conn, [_hello("remote", OTHER_HOST), _hello("local", leases.host_id())], book)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for instance_id in ("remote", "local"):
            liveness.abandon(conn, liveness.DeadInstance(instance_id, 4242, "abandoned: silent"), NOW_US)
    beats = [codec.encode_instance_heartbeat(i, TOKEN, NOW_US) for i in ("remote", "local")]
    _apply(conn, beats, book, NOW_US + 5_000_000)
    assert _row(conn, "remote")["state"] == "live" and _row(conn, "remote")["ended_at"] is None
    assert _row(conn, "local")["state"] == "dead"  # its pid decided: no heartbeat undoes that


def test_silence_counts_from_the_writers_start_and_from_the_last_word_heard(conn: sqlite3.Connection) -> None:
    _apply(conn, [_hello("remote", OTHER_HOST), _hello("quiet", OTHER_HOST)], SequenceBook())
    remote = RemoteInstances(10.0, started=100.0)
    assert remote.find_silent(conn, leases.host_id(), 109.0) == []  # both: never heard, but 9 s only
    remote.heard(["remote"], 105.0)
    silent = remote.find_silent(conn, leases.host_id(), 110.5)
    assert [d.instance_id for d in silent] == ["quiet"]
    assert "not heard from for 10.5 s" in (silent[0].reason or "")
    remote.declared_dead(["quiet"])
    assert [d.instance_id for d in remote.find_silent(conn, leases.host_id(), 115.0)] == ["remote", "quiet"]


def test_the_writers_own_host_id_is_never_judged_by_silence(conn: sqlite3.Connection) -> None:
    _apply(conn, [_hello("local", leases.host_id()), _hello("old", None)], SequenceBook())
    assert RemoteInstances(1.0, started=0.0).find_silent(conn, leases.host_id(), 1e6) == []


def test_the_skew_is_the_smallest_recent_difference_and_follows_a_step() -> None:
    remote = RemoteInstances(10.0, started=0.0)
    assert remote.skew_us("a") is None
    for delay_us in (900, 40_000, 150, 2_000_000):  # queueing only ever adds
        remote.clock_sample("a", 1_000_000, 1_000_000 + 5_000_000 + delay_us, 1.0)
    assert remote.skew_us("a") == 5_000_150
    for _ in range(SKEW_WINDOW):  # the sender's clock stepped forward by 5 s
        remote.clock_sample("a", 1_000_000, 1_000_000 + 300, 2.0)
    assert remote.skew_us("a") == 300


def test_a_skew_is_written_when_first_measured_and_again_only_once_it_moved() -> None:
    remote = RemoteInstances(10.0, started=0.0)
    remote.clock_sample("a", 0, 2_000_000, 1.0)
    assert remote.skews_to_write(["a"]) == {"a": 2_000_000}
    remote.written({"a": 2_000_000})
    remote.clock_sample("a", 0, 1_999_990, 2.0)
    assert remote.skews_to_write(["a"]) == {}
    remote.clock_sample("a", 0, 1_900_000, 3.0)
    assert remote.skews_to_write(["a"]) == {"a": 1_900_000}


def test_a_silence_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RemoteInstances(0.0)


def test_the_host_id_test_hook_replaces_the_host_id(monkeypatch: pytest.MonkeyPatch) -> None:
    leases.host_id.cache_clear()
    try:
        monkeypatch.setenv(leases.HOST_ID_ENV, "elsewhere")
        assert leases.host_id() == "elsewhere" and not leases.is_local("elsewhere-not")
        leases.host_id.cache_clear()
        monkeypatch.delenv(leases.HOST_ID_ENV)
        own = leases.host_id()
        assert leases.is_local(own) and leases.is_local(None) and not leases.is_local("elsewhere")
        if leases.boot_id() is not None:
            assert own.startswith(leases.boot_id() + "/pid:[")
    finally:
        leases.host_id.cache_clear()
