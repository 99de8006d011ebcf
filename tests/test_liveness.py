"""A GUI instance that dies is seen dead within seconds, and what it left running fails."""

from __future__ import annotations

from conftest import wait_until

from see_persistence import Reader, Status


def test_a_client_killed_with_sigkill_has_its_running_records_abandoned(db, writers, clients):
    writers(db).wait_holding_lease()
    victim = clients(db, "--label", "victim", "--workflows", "2", "--leave-running")
    survivor = clients(db, "--label", "survivor", "--workflows", "1", "--leave-running")
    victim.read_event()
    survivor.read_event()
    left = victim.read_event()
    kept = survivor.read_event()
    assert left["flushed"] and kept["flushed"]
    reader = Reader(db)
    assert {i.id for i in reader.get_active_instances()} >= {left["instance_id"], kept["instance_id"]}
    victim.kill()

    def abandoned():
        run = reader.get_workflow(left["running_workflow"])
        return run if run.status == Status.FAILED else None

    # Seconds, not minutes: the sweep runs every second; 10 s leaves a loaded machine room.
    run = wait_until(abandoned, 10, "the dead instance's workflow to be abandoned within seconds")
    assert run.success is False and run.completed_at is not None
    assert run.error_message.startswith("abandoned:")
    assert left["instance_id"] in run.error_message and f"pid {victim.pid}" in run.error_message
    [task] = reader.get_tasks_for_workflow(left["running_workflow"])
    assert task.status == Status.FAILED and task.error_message.startswith("abandoned:")
    events = [e for e in reader.get_audit_trail(run.id) if e.event_type == "workflow_abandoned"]
    assert len(events) == 1 and events[0].data["pid"] == victim.pid
    # What it had completed stays completed; the live instance is untouched.
    assert all(
        r.status == Status.COMPLETED
        for r in reader.get_workflows_for_instance(left["instance_id"])
        if r.id != run.id
    )
    assert reader.get_workflow(kept["running_workflow"]).status == Status.RUNNING
    active = {i.id for i in reader.get_active_instances()}
    assert left["instance_id"] not in active and kept["instance_id"] in active
    assert reader.get_instance(left["instance_id"]).state == "dead"


def test_an_instance_that_closed_cleanly_is_ended_and_its_records_untouched(db, writers, clients):
    writers(db).wait_holding_lease()
    report = clients(db, "--workflows", "2").finish()
    reader = Reader(db)
    instance = reader.get_instance(report["instance_id"])
    assert instance.state == "ended" and instance.ended_at is not None
    assert [r.status for r in reader.get_workflows_for_instance(report["instance_id"])] == [
        Status.COMPLETED
    ] * 2
    assert report["instance_id"] not in {i.id for i in reader.get_active_instances()}
