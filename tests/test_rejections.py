"""A write the writer refuses is never taken for a committed one: flush says so, stats count
it, and the client can ask why; stats count the caller's operations only."""

from __future__ import annotations

from see_persistence import Client, Reader, Status


def test_a_rejected_write_makes_flush_false_and_is_counted_and_explained(db, writers):
    writers(db).wait_holding_lease()
    with Client(db) as client:
        orphan = client.create_task("0190a0a0-0000-7000-8000-000000000000", "compile")
        assert client.flush(timeout=20) is False  # settled, but not applied
        stats = client.stats
        assert (stats.accepted, stats.confirmed, stats.rejected, stats.buffered) == (1, 1, 1, 0)
        [rejection] = client.rejections()
        assert rejection.operation == "create_task"
        assert "FOREIGN KEY" in rejection.reason and rejection.instance_id == client.instance_id
        assert Reader(db).query("SELECT COUNT(*) FROM task_executions WHERE id = ?", (orphan,)) == [(0,)]

        client.update_workflow_status("not-an-id", Status.RUNNING)
        assert client.flush(timeout=20) is False
        assert client.stats.rejected == 2
        assert "no record with id 'not-an-id'" in client.rejections()[0].reason

        # Once the rejections were reported, a flush of good writes is True again.
        wid = client.create_workflow("good")
        assert client.flush(timeout=20) is True
        assert Reader(db).get_workflow(wid) is not None
        assert client.stats.rejected == 2
    instance = Reader(db).get_instance(client.instance_id)
    assert instance is not None and instance.rejected == 2 and instance.state == "ended"


def test_stats_count_the_callers_operations_not_the_instances_own(db, writers):
    writers(db).wait_holding_lease()
    client = Client(db)
    client.create_workflow("one")
    assert client.flush(timeout=20)
    stats = client.stats
    assert (stats.accepted, stats.sent, stats.confirmed, stats.buffered, stats.rejected) == (1, 1, 1, 0, 0)
    assert client.close(timeout=20)  # the goodbye goes out and is confirmed, but is not the caller's
    stats = client.stats
    assert (stats.accepted, stats.sent, stats.confirmed, stats.buffered) == (1, 1, 1, 0)


def test_the_rejected_count_is_kept_across_a_writer_change(db, writers):
    first = writers(db)
    first.wait_holding_lease()
    client = Client(db)
    client.append_task_log("0190a0a0-0000-7000-8000-000000000001", "a line for no task")
    assert client.flush(timeout=20) is False
    first.stop()  # SIGKILL
    second = writers(db)
    second.wait_holding_lease()
    client.append_task_log("0190a0a0-0000-7000-8000-000000000002", "another")
    assert client.flush(timeout=30) is False
    # The new writer continued the instance's count from the file: 2, not 1.
    assert client.stats.rejected == 2
    assert Reader(db).get_instance(client.instance_id).rejected == 2
    client.close(timeout=10)
