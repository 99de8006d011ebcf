"""A backup restored under running GUIs: the clients start over as new instances with what
the restored file lacks, and nothing they still hold is lost."""

from __future__ import annotations

import signal

from cli_support import cli
from conftest import wait_until

from see_persistence import Client, Reader


def test_records_made_around_a_restore_all_reach_the_restored_file(db, writers, tmp_path):
    writer = writers(db)
    writer.wait_holding_lease()
    client = Client(db)
    before_backup = [client.create_workflow(f"before-backup-{n}") for n in range(5)]
    assert client.flush(timeout=20)
    backup = tmp_path / "backup.db"
    assert cli("backup", backup, "--db", db).returncode == 0
    # Confirmed after the backup: the restore takes these away (that is what a restore is).
    lost_by_restore = [client.create_workflow(f"after-backup-{n}") for n in range(5)]
    assert client.flush(timeout=20)
    first_instance = client.instance_id

    writer.signal(signal.SIGTERM)
    assert writer.wait_exit(20) == 0
    while_stopped = [client.create_workflow(f"while-stopped-{n}") for n in range(50)]
    result = cli("restore", backup, "--db", db)
    assert result.returncode == 0, result.stdout + result.stderr
    writers(db).wait_holding_lease()
    after_restore = [client.create_workflow(f"after-restore-{n}") for n in range(50)]

    # Before: the restored file's sequence for this instance was behind the client's, every
    # new writer held its messages back as a gap, and flush() stayed False forever.
    assert client.flush(timeout=30) is True
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow(after_restore[-1]) is not None, 10, "the last record")
    assert all(reader.get_workflow(wid) is not None for wid in before_backup + while_stopped + after_restore)
    assert all(reader.get_workflow(wid) is None for wid in lost_by_restore)
    assert client.instance_id != first_instance and client.stats.registrations == 1
    assert reader.get_instance(client.instance_id).state == "live"
    assert {w.instance_id for w in reader.list_workflows(limit=100, instance_id=client.instance_id)}
    assert client.close(timeout=20)
