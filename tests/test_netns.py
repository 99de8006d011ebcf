"""A second host for real: the writer in one network namespace, the clients in another (issue 16).

The two namespaces are joined by a veth pair (tests/netns.py); the writers listen only on the
server end's address, and the clients, told to use TCP, find it through the lease row of the
shared database file. Each test checks by the ids the clients report that nothing is lost and
nothing is applied twice, across a writer SIGKILLed and replaced by a standby, and across the
link cut for CUT_S under load; and a watcher in the clients' namespace sees the commits.
The clients of the cut tests claim another host ($SEE_PERSISTENCE_TEST_HOST_ID): the writer
hears their heartbeats, and marks them dead only when a cut outlasts its `--remote-silence`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientProcess, WriterProcess, wait_until
from netns import NetnsPair

from see_persistence import Reader, leases

CUT_S = 10.0
# The writer's silence limit for instances of other hosts (`--remote-silence`): well past the
# cut (plus a heartbeat interval before it and TCP's retransmission backoff after it), and
# well inside it.
LONG_SILENCE_S = 3 * CUT_S
SHORT_SILENCE_S = CUT_S / 2
OTHER_HOST_ID = "another-host/pid:[4026531836]"
WATCHER_SCRIPT = Path(__file__).parent / "watcher_process.py"
FINISH_TIMEOUT_S = 90.0


@pytest.fixture
def tcp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """TCP for every process of the test, with one key directory (the files are shared)."""
    monkeypatch.setenv("SEE_PERSISTENCE_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("SEE_PERSISTENCE_TRANSPORT", "tcp")
    return dict(os.environ)


@pytest.fixture
def far_env(tcp_env: dict[str, str]) -> dict[str, str]:
    """A client's environment that claims another host: the writer must go by its heartbeats."""
    return {**tcp_env, leases.HOST_ID_ENV: OTHER_HOST_ID}


def _listening_on(db: Path | str, pair: NetnsPair) -> list[tuple[str, str]]:
    """The lease's endpoints once recorded: every one on the server end of the veth, none ipc."""
    reader = Reader(db)
    try:
        endpoints = wait_until(
            lambda: reader.get_writer_status().endpoints, 20, "the writer to record its endpoints"
        )
    finally:
        reader.close()
    prefix = f"tcp://{pair.server_ip}:"
    assert all(pull.startswith(prefix) and pub.startswith(prefix) for pull, pub in endpoints), endpoints
    return list(endpoints)


def _start_writer(writers, db: Path, pair: NetnsPair, env: dict[str, str], *extra: str) -> WriterProcess:
    writer: WriterProcess = writers(db, "--listen", pair.listen(), *extra, env=env, prefix=pair.in_server())
    return writer


def _start_client(clients, db: Path | str, pair: NetnsPair, env: dict[str, str], *args: str) -> ClientProcess:
    client: ClientProcess = clients(
        db, *args, "--flush-timeout", str(FINISH_TIMEOUT_S - 10), env=env, prefix=pair.in_client()
    )
    return client


def _check_exact(db: Path | str, reports: list[dict[str, Any]], tasks: int, logs: int, events: int) -> None:
    """Every workflow a client reported is there once, with exactly its tasks, log lines and events."""
    reader = Reader(db)
    try:
        expected = {wid for report in reports for wid in report["workflow_ids"]}
        for report in reports:
            mine = {w.id for w in reader.get_workflows_for_instance(report["instance_id"], limit=None)}
            assert mine == set(report["workflow_ids"]), (
                f"instance {report['instance_id']} lost or gained runs"
            )
        counts = reader.count_rows()
        assert counts["workflow_executions"] == len(expected)
        assert counts["task_executions"] == len(expected) * tasks
        assert counts["audit_events"] == len(expected) * events
        assert counts["dead_letters"] == 0
        # A log append applied twice would show as a line too many: the one place a double is visible.
        log_lengths = {len(json.loads(row[0])) for row in reader.query("SELECT logs FROM task_executions")}
        assert log_lengths == {logs}
        statuses = {row[0] for row in reader.query("SELECT status FROM workflow_executions")}
        assert statuses == {"completed"}
    finally:
        reader.close()


def test_a_writer_killed_in_one_namespace_is_replaced_and_clients_in_the_other_lose_nothing(
    netns_pair: NetnsPair, db, writers, clients, tcp_env
) -> None:
    first = _start_writer(writers, db, netns_pair, tcp_env)
    first.wait_holding_lease()
    old = _listening_on(db, netns_pair)
    standby = _start_writer(writers, db, netns_pair, tcp_env, "--standby")
    wait_until(lambda: "standing by" in standby.log(), 20, "the standby to wait for the lease")
    shape = ("--workflows", "200", "--tasks", "2", "--logs", "1", "--events", "1")
    procs = [_start_client(clients, db, netns_pair, tcp_env, "--label", f"c{n}", *shape) for n in range(3)]
    for proc in procs:
        proc.read_event()  # started
    wait_until(lambda: Reader(db).count_rows()["workflow_executions"] > 30, 30, "the first commits")
    first.signal(signal.SIGKILL)
    first.wait_exit()
    standby.wait_holding_lease()
    assert _listening_on(db, netns_pair) != old  # ports of its own: the clients had to read the lease again
    reports = [proc.finish(timeout=FINISH_TIMEOUT_S) for proc in procs]
    assert all(report["flushed"] for report in reports), [r["stats"] for r in reports]
    _check_exact(db, reports, tasks=2, logs=1, events=1)


def test_two_postgresql_writers_in_two_namespaces_one_writes_and_the_other_takes_over(
    netns_pair: NetnsPair, postgres_url: str, writers, clients, tcp_env
) -> None:
    # Each namespace is a machine of its own to the writers' clients, which find the writer
    # through the lease row. Both writers reach the session's PostgreSQL server through its
    # unix socket, a file: network namespaces part the network only, so no TCP listener of
    # the server is needed for two writers on two "machines" to contend for its advisory lock.
    first: WriterProcess = writers(
        postgres_url, "--listen", netns_pair.listen(), env=tcp_env, prefix=netns_pair.in_server()
    )
    first.wait_holding_lease()
    old = _listening_on(postgres_url, netns_pair)
    other_side = f"tcp://{netns_pair.client_ip}:"
    standby: WriterProcess = writers(
        postgres_url, "--listen", f"{other_side}0", "--standby", env=tcp_env, prefix=netns_pair.in_client()
    )
    wait_until(lambda: "standing by" in standby.log(), 30, "the standby to wait for the lease")
    shape = ("--workflows", "150", "--tasks", "2", "--logs", "1", "--events", "1")
    procs = [
        _start_client(clients, postgres_url, netns_pair, tcp_env, "--label", f"c{n}", *shape)
        for n in range(2)
    ]
    for proc in procs:
        proc.read_event()  # started
    reader = Reader(postgres_url)
    try:
        wait_until(lambda: reader.count_rows()["workflow_executions"] > 20, 30, "the first commits")
        status = reader.get_writer_status()
        assert (status.pid, list(status.endpoints)) == (first.pid, old)  # exactly one writes
        assert standby.process.poll() is None and "standing by" in standby.log()
        first.signal(signal.SIGKILL)
        first.wait_exit()
        standby.wait_holding_lease()
        taken = wait_until(lambda: reader.get_writer_status().endpoints, 20, "the standby's endpoints")
        assert all(pull.startswith(other_side) and pub.startswith(other_side) for pull, pub in taken), taken
        assert reader.get_writer_status().epoch == status.epoch + 1
        reports = [proc.finish(timeout=FINISH_TIMEOUT_S) for proc in procs]
        assert all(report["flushed"] for report in reports), [r["stats"] for r in reports]
        _check_exact(postgres_url, reports, tasks=2, logs=1, events=1)
    finally:
        reader.close()


@dataclass
class CutRun:
    """What a cut under load left: the clients' reports, and their instances' states seen during the cut."""

    reports: list[dict[str, Any]]
    states_during_cut: dict[str, set[str]] = field(default_factory=dict)


def _cut_under_load(
    pair: NetnsPair,
    db: Path,
    writers,
    clients,
    env: dict[str, str],
    *writer_args: str,
    client_env: dict[str, str] | None = None,
) -> CutRun:
    """Clients in the client namespace under load, the link cut for CUT_S, then restored.

    Three pairs of clients: `sending` ones are busy sending megabytes when the link goes
    (most likely still: only the others are sure to be cut off); `connected` ones have
    registered over TCP and record everything on their established connections during the
    cut; `late` ones start during the cut. Every one must flush once the link is back, and
    every client process lives through the cut (the sending ones wait to be told to flush and
    end, the others cannot flush before the link is back), so none is dead while it is down.
    Returns their final reports and, per instance, every state the instances table gave it
    while the link was down (sampled as the cut is held).
    """
    writer = _start_writer(writers, db, pair, env, *writer_args)
    writer.wait_holding_lease()
    _listening_on(db, pair)
    client_env = client_env or env
    # Log lines of 1 kB: megabytes, so that the sending clients are still at it when the link goes.
    shape = ("--workflows", "600", "--tasks", "2", "--logs", "2", "--line-chars", "1000", "--events", "1")

    def start(label: str, *args: str) -> ClientProcess:
        return _start_client(clients, db, pair, client_env, "--label", label, *args, *shape)

    connected = [start(f"c{n}", "--wait-before-record") for n in range(2)]
    sending = [start(f"s{n}", "--wait-after-record") for n in range(2)]
    for proc in [*connected, *sending]:
        proc.read_event()  # started
    wait_until(lambda: Reader(db).count_rows()["instances"] == 4, 30, "the four clients' hellos committed")
    pair.set_link(up=False)
    cut_at = time.monotonic()
    for proc in connected:
        proc.proceed()  # record now, into connections that carry nothing
    late = [start(f"l{n}") for n in range(2)]
    for proc in late:
        proc.read_event()  # started
    cut_off = [proc.read_event() for proc in [*connected, *late]]  # recorded, flushing across the cut
    assert not pair.link_is_up()
    run = CutRun(reports=[])
    reader = Reader(db)

    def cut_lasted() -> bool:
        assert writer.process.poll() is None, f"the writer exited during the cut:\n{writer.log()}"
        for instance in reader.get_instances():
            run.states_during_cut.setdefault(instance.id, set()).add(str(instance.state))
        return time.monotonic() - cut_at >= CUT_S

    wait_until(cut_lasted, CUT_S + 10, f"the cut to last {CUT_S} s")
    # Nothing crosses a cut link: not one record made during the cut is in.
    for report in cut_off:
        assert not any(reader.get_workflow(wid) for wid in report["workflow_ids"])
    pair.set_link(up=True)
    wait_until(pair.link_is_up, 20, "the link to come back")
    for proc in sending:
        proc.read_event()  # recorded (before the cut, most likely)
        proc.proceed()  # now flush and end
    run.reports = [proc.finish(timeout=FINISH_TIMEOUT_S) for proc in [*connected, *sending, *late]]
    assert all(report["flushed"] for report in run.reports), [r["stats"] for r in run.reports]
    _check_exact(db, run.reports, tasks=2, logs=2, events=1)
    return run


def test_the_link_cut_for_ten_seconds_under_load_loses_and_doubles_nothing(
    netns_pair: NetnsPair, db, writers, clients, tcp_env, far_env
) -> None:
    # The clients claim another host, so the writer judges them by what it hears, not by their
    # pid; the cut is shorter than the silence it allows: every process lived through it, and
    # no instance may have been marked dead meanwhile (the late ones could not even register).
    run = _cut_under_load(
        netns_pair, db, writers, clients, tcp_env, "--remote-silence", str(LONG_SILENCE_S), client_env=far_env
    )
    assert {r["instance_id"] for r in run.reports[:4]} <= set(run.states_during_cut)
    assert all(states == {"live"} for states in run.states_during_cut.values()), run.states_during_cut


def test_a_cut_longer_than_the_silence_marks_other_hosts_instances_dead_until_they_are_heard_again(
    netns_pair: NetnsPair, db, writers, clients, tcp_env, far_env
) -> None:
    writer = _start_writer(writers, db, netns_pair, tcp_env, "--remote-silence", str(SHORT_SILENCE_S))
    writer.wait_holding_lease()
    _listening_on(db, netns_pair)
    # Registered, then idle (heartbeats only) until the cut; they record during it and wait to
    # be told to flush, so that they are still running when the link returns. Nothing of theirs
    # runs when they are marked dead: no workflow of theirs may be abandoned.
    shape = ("--workflows", "100", "--tasks", "2", "--logs", "2", "--events", "1")
    procs = [
        _start_client(
            clients,
            db,
            netns_pair,
            far_env,
            "--label",
            f"r{n}",
            "--wait-before-record",
            "--wait-after-record",
            *shape,
        )
        for n in range(3)
    ]
    ids = [proc.read_event()["instance_id"] for proc in procs]
    reader = Reader(db)

    def states() -> dict[str, str]:
        return {i.id: str(i.state) for i in reader.get_instances() if i.id in ids}

    wait_until(lambda: set(states()) == set(ids), 30, "the clients' hellos committed")
    assert set(states().values()) == {"live"}
    netns_pair.set_link(up=False)
    cut_at = time.monotonic()
    for proc in procs:
        proc.proceed()
    cut_off = [proc.read_event() for proc in procs]  # recorded, into connections that carry nothing
    seen_dead: set[str] = set()

    def cut_lasted() -> bool:
        assert writer.process.poll() is None, f"the writer exited during the cut:\n{writer.log()}"
        seen_dead.update(i for i, state in states().items() if state == "dead")
        return time.monotonic() - cut_at >= CUT_S and seen_dead == set(ids)

    # Held for CUT_S, and on until every instance is marked dead (the silence plus a sweep).
    wait_until(cut_lasted, CUT_S + 20, f"the instances to be marked dead within a cut of {CUT_S} s or more")
    assert not any(reader.get_workflow(wid) for report in cut_off for wid in report["workflow_ids"])
    netns_pair.set_link(up=True)
    wait_until(netns_pair.link_is_up, 20, "the link to come back")
    wait_until(lambda: set(states().values()) == {"live"}, 30, "the instances to be heard again and live")
    for proc in procs:
        proc.proceed()  # flush and end
    reports = [proc.finish(timeout=FINISH_TIMEOUT_S) for proc in procs]
    assert all(report["flushed"] for report in reports), [r["stats"] for r in reports]
    _check_exact(db, reports, tasks=2, logs=2, events=1)
    assert set(states().values()) == {"ended"}


def test_a_watcher_in_the_clients_namespace_sees_the_commits_over_tcp_in_order(
    netns_pair: NetnsPair, db, writers, clients, tcp_env
) -> None:
    writer = _start_writer(writers, db, netns_pair, tcp_env)
    writer.wait_holding_lease()
    _listening_on(db, netns_pair)
    watcher = subprocess.Popen(
        [*netns_pair.in_client(), sys.executable, str(WATCHER_SCRIPT), "--db", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=tcp_env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in watcher.stdout or ():
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()

    def next_item() -> dict[str, Any]:
        try:
            return json.loads(lines.get(timeout=30))  # type: ignore[no-any-return]
        except queue.Empty:
            raise AssertionError("the watcher printed nothing for 30 s") from None

    try:
        started = next_item()
        assert (started["item"], started["cause"]) == ("resync", "started")
        assert next_item() == {"item": "heard"}  # its first notice came across the veth
        report = _start_client(clients, db, netns_pair, tcp_env, "--workflows", "5").finish()
        assert report["flushed"]
        items: list[dict[str, Any]] = []
        left = set(report["workflow_ids"])
        while left:
            item = next_item()
            items.append(item)
            if item.get("kind") == "workflow" and item["status"] == "completed":
                left.discard(item["id"])
        assert all(i["item"] == "change" for i in items), items  # no gap: every commit came as a notice
        assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
    finally:
        if watcher.stdin is not None:
            watcher.stdin.close()
        watcher.wait(timeout=20)
    while (closed := next_item())["item"] != "closed":
        assert closed["item"] == "change", closed  # the rest of the last notice, then the end
    assert closed["stats"]["refused"] is None
