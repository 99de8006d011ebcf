"""A live fuzz: thousands of generated bad messages straight at a running writer's socket,
interleaved with a good client. The writer stays up, every good record commits, every bad
message gets exactly one dead-letter row, and odd-but-valid strings are stored as sent.
Messages of instances that never said hello are not applied and leave nothing behind."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
from conftest import wait_until

from see_persistence import Reader, leases, locations
from see_persistence.protocol import codec, operations

AT = 1_700_000_000_000_000


def _valid_create(rng: random.Random, n: int) -> dict[str, Any]:
    return {"id": f"fz-wf-{n}", "workflow_name": f"fuzz {n}", "metadata": "{}", "at_us": AT + n}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _hello(token: str | None) -> tuple[str, dict[str, Any]]:
    """A hello registering this test process as an instance (None: an older client's, no token)."""
    me = leases.current_process()
    payload = {"pid": me.pid, "process_create_time": me.create_time, "host": me.host, "at_us": AT}
    return ("hello", payload if token is None else {**payload, "token": token})


def _token(n: int) -> str | None:
    return None if n % 3 == 0 else f"fuzz-token-{n:021d}"  # every third one an older client's


# Each generator returns one message that must become exactly one dead letter. Envelopes that
# decode use a fresh instance id and seq 1, registering it with a hello before the bad
# operation, so neither the dedup rules nor the unknown-instance rule can hide it.
def _bad_generators() -> list[Callable[[random.Random, int], bytes]]:
    def envelope(n: int, op: list[Any]) -> bytes:
        token = _token(n)
        return codec.encode_message(f"fz-inst-{n}", 1, [_hello(token), tuple(op)], token)

    def with_field(n: int, rng: random.Random, field: str, value: Any) -> bytes:
        payload = _valid_create(rng, n)
        payload[field] = value
        return envelope(n, ["create_workflow", payload])

    return [
        lambda rng, n: rng.randbytes(rng.randint(1, 300)) + b"\xc1",  # 0xc1 is never valid msgpack
        lambda rng, n: msgpack.packb([1, f"fz-inst-{n}", 1, [["create_workflow", _valid_create(rng, n)]]])[
            : rng.randint(1, 20)
        ],
        lambda rng, n: msgpack.packb(
            [rng.choice([0, 2, 7, -1, 2**40]), f"fz-inst-{n}", 1, [["goodbye", {}]]]
        ),
        lambda rng, n: msgpack.packb([1, f"fz-inst-{n}", rng.choice([0, -5, 2**63, 1.5, "1", None]), []]),
        lambda rng, n: msgpack.packb(
            [1, rng.choice(["", None, 5, "x" * 200]), 1, [["goodbye", {"at_us": 1}]]]
        ),
        lambda rng, n: envelope(n, [rng.choice(["DROP TABLE", "create_Workflow", "", "hello\0"]), {}]),
        lambda rng, n: envelope(n, ["create_workflow", rng.choice([None, [], "x", 5])]),
        lambda rng, n: with_field(n, rng, "workflow_name", rng.choice(["", "   ", 5, None, "n" * 5000])),
        lambda rng, n: with_field(n, rng, "metadata", rng.choice(["{", "[]", "NaN", '{"a": NaN}', "1"])),
        lambda rng, n: with_field(n, rng, "metadata", '{"a": ' + _nested(rng.randint(65, 5000)) + "}"),
        lambda rng, n: with_field(
            n, rng, "metadata", json.dumps({"k": "v" * (operations.MAX_JSON_CHARS + 1)})
        ),
        lambda rng, n: with_field(n, rng, "at_us", rng.choice([-1, True, "now", 2**62, 1.5])),
        lambda rng, n: with_field(n, rng, "id", rng.choice(["", 7, "i" * 129, None])),
        lambda rng, n: with_field(n, rng, "surprise", 1),
        lambda rng, n: envelope(
            n,
            [
                "create_task",
                {
                    "id": f"fz-t-{n}",
                    "workflow_id": "no-such-workflow",
                    "task_name": "t",
                    "execution_order": 1,
                    "at_us": AT,
                },
            ],
        ),
        lambda rng, n: envelope(
            n,
            [
                "create_task",
                {
                    "id": f"fz-t-{n}",
                    "workflow_id": "w",
                    "task_name": "t",
                    "execution_order": rng.choice([2**31, True, 1.0]),
                    "at_us": AT,
                },
            ],
        ),
        lambda rng, n: envelope(n, ["update_task_status", {"id": "nope", "status": "running", "at_us": AT}]),
        lambda rng, n: envelope(
            n, ["update_workflow_status", {"id": "x", "status": "finished", "at_us": AT}]
        ),
        lambda rng, n: msgpack.packb([1, f"fz-inst-{n}", 1, [["goodbye"]]]),
        lambda rng, n: msgpack.packb([1, f"fz-inst-{n}", 1, [msgpack.ExtType(5, b"x")]]),
    ]


def test_thousands_of_bad_messages_each_leave_one_dead_letter_while_good_traffic_commits(
    db, writers, clients
):
    writer = writers(db)
    writer.wait_holding_lease()
    good = clients(db, "--label", "good", "--workflows", "60", "--tasks", "2", "--wait-before-record")
    good.read_event()
    rng = random.Random(20261201)
    generators = _bad_generators()
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(locations.endpoints_for(db).pull)
    weird_names = [
        "nul\0inside",
        "'; DELETE FROM workflow_executions; --",
        "\U0001f600 emoji",
        "tab\tand\nnewline",
    ]
    bad_sent = 0
    good.proceed()
    for n in range(3000):
        sock.send(generators[n % len(generators)](rng, n))
        bad_sent += 1
        if n % 10 == 0:
            index = n // 10
            payload = {
                "id": f"fz-ok-{index}",
                "workflow_name": weird_names[index % len(weird_names)],
                "metadata": json.dumps({"n": index, "s": weird_names[index % len(weird_names)]}),
                "at_us": AT,
            }
            token = _token(index)
            ops = [_hello(token), ("create_workflow", payload)]
            sock.send(codec.encode_message(f"fz-good-{index}", 1, ops, token))
            # Never registered: nothing of it is applied, and it leaves no dead letter either.
            sock.send(
                codec.encode_message(f"fz-stranger-{index}", 1 + index % 2, [("create_workflow", payload)])
            )
    report = good.finish(timeout=90)
    assert report["flushed"] is True
    marker = {"id": "fz-marker", "workflow_name": "marker", "metadata": "{}", "at_us": AT}
    sock.send(codec.encode_message("fz-marker-instance", 1, [_hello(None), ("create_workflow", marker)]))
    reader = Reader(db)
    wait_until(lambda: reader.get_workflow("fz-marker"), 60, "the fuzz traffic to drain")
    assert writer.process.poll() is None
    assert reader.count_rows()["dead_letters"] == bad_sent
    reasons = reader.query("SELECT reason FROM dead_letters WHERE reason = '' OR reason IS NULL")
    assert reasons == []
    assert len(reader.get_workflows_for_instance(report["instance_id"])) == 60
    assert reader.query("SELECT COUNT(*) FROM instances WHERE id LIKE 'fz-stranger-%'") == [(0,)]
    for index in range(300):
        run = reader.get_workflow(f"fz-ok-{index}")
        assert run is not None
        assert run.workflow_name == weird_names[index % len(weird_names)]
        assert run.metadata == {"n": index, "s": weird_names[index % len(weird_names)]}
    sock.close()
    context.term()
