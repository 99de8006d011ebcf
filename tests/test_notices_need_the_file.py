"""A commit notice is only the word of whoever holds the writer's socket: the client forgets
nothing until the file at the database's path holds it."""

from __future__ import annotations

import msgpack
import zmq
from conftest import wait_until

from see_persistence import Client, Reader, locations
from see_persistence.protocol import codec


def test_notices_the_file_does_not_bear_out_make_no_flush_true_and_lose_nothing(db, writers):
    endpoints = locations.endpoints_for(db)
    locations.ensure_private_directory(endpoints.directory)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pub = context.socket(zmq.PUB)
    pull.bind(endpoints.pull)  # an impostor at the writer's endpoints, claiming every commit
    pub.bind(endpoints.pub)
    client = Client(db)
    ids = [client.create_workflow(f"w{n}") for n in range(20)]
    try:
        highest: dict[str, int] = {}

        def claim_commits() -> bool:
            while pull.poll(0):
                kind, instance_id, seq, *_ = msgpack.unpackb(pull.recv())  # [version, instance, seq, ...]
                if kind == codec.HEARTBEAT_KIND:
                    continue  # with no lease to read, the client cannot know it shares our host
                highest[instance_id] = max(seq, highest.get(instance_id, 0))
            for instance_id, seq in highest.items():
                pub.send_multipart(codec.encode_commit_notice(instance_id, 1, seq))
            return client._outbox.counts().noticed_messages > 0

        wait_until(claim_commits, 20, "the client to take the impostor's notices")
        assert client.flush(timeout=1.0) is False  # there is no file: nothing is confirmed
        assert client.stats.confirmed == 0
        # The sending thread gives up on the notices and takes the messages back.
        wait_until(lambda: claim_commits() and client.stats.resent > 0, 20, "the notices to be disowned")
    finally:
        pull.close(linger=0)
        pub.close(linger=0)
        context.term()
    writers(db).wait_holding_lease()
    assert client.flush(timeout=30) is True
    reader = Reader(db)
    assert all(reader.get_workflow(wid) is not None for wid in ids)
    assert client.stats.confirmed == 20
    assert client.close(timeout=10)


def _file_with_workflows(path, count: int) -> None:
    import sqlite3

    from see_persistence.protocol import schema

    conn = sqlite3.connect(path)
    for statement in schema.upgrade_statements(0):
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO workflow_executions (id, workflow_name, status, created_at)"
        " VALUES (?, 'w', 'pending', ?)",
        [(f"w{n}", "2026-01-01T00:00:00.000000+00:00") for n in range(count)],
    )
    conn.commit()
    conn.close()


def test_a_reader_follows_the_path_to_the_file_now_there(tmp_path):
    path, other = tmp_path / "wf.db", tmp_path / "restored.db"
    _file_with_workflows(path, 1)
    _file_with_workflows(other, 2)
    reader = Reader(path)
    assert reader.count_rows()["workflow_executions"] == 1
    other.replace(path)  # as a restore does: the old inode lives on in the open connection
    reader.recheck_file()
    assert reader.count_rows()["workflow_executions"] == 2
    path.unlink()
    reader.recheck_file()
    try:
        reader.count_rows()
    except FileNotFoundError as exc:
        assert str(path) in str(exc)
    else:
        raise AssertionError("a Reader read a file that no name leads to")
    # Without being asked, it notices within FILE_IDENTITY_CHECK_S as well.
    _file_with_workflows(path, 3)
    wait_until(lambda: reader.count_rows()["workflow_executions"] == 3, 10, "the new file")
