"""The Client's outbox as plain function calls: numbering, cutting into messages, confirming, the bound."""

from __future__ import annotations

import msgpack
import pytest

from see_persistence.client import outbox as outbox_module
from see_persistence.client.outbox import MAX_OPERATIONS_PER_SEND, MAX_OPERATIONS_PER_TAKE, Outbox
from see_persistence.protocol import codec

pytestmark = pytest.mark.unit


def _fill(box: Outbox, count: int, text: str = "x") -> None:
    for n in range(count):
        assert box.put("audit_event", {"n": n, "text": text})


def test_takes_cut_pending_operations_into_numbered_messages_in_order():
    box = Outbox("inst", limit=100_000)
    _fill(box, 2 * MAX_OPERATIONS_PER_SEND + 7)
    messages = []
    while taken := box.take():
        messages.extend(taken)
    assert [m.seq for m in messages] == [1, 2, 3]
    assert [m.operations for m in messages] == [MAX_OPERATIONS_PER_SEND, MAX_OPERATIONS_PER_SEND, 7]
    assert [m.last_operation for m in messages] == [512, 1024, 1031]
    numbers = []
    for message in messages:
        envelope = codec.decode_message(message.raw)
        assert (envelope.instance_id, envelope.seq) == ("inst", message.seq)
        numbers.extend(payload["n"] for _, payload in envelope.operations)
    assert numbers == list(range(2 * MAX_OPERATIONS_PER_SEND + 7))
    assert box.take() == []
    assert box.counts().buffered == 1031  # taken is not confirmed: still held


def test_one_take_is_bounded_and_the_rest_waits_for_the_next():
    box = Outbox("inst", limit=100_000)
    _fill(box, MAX_OPERATIONS_PER_TAKE + 100)
    first = box.take()
    assert sum(m.operations for m in first) == MAX_OPERATIONS_PER_TAKE
    assert box.has_pending()
    second = box.take()
    assert [m.operations for m in second] == [100]
    assert second[0].seq == first[-1].seq + 1
    assert second[0].last_operation == MAX_OPERATIONS_PER_TAKE + 100


def test_messages_stay_under_the_byte_limit(monkeypatch):
    monkeypatch.setattr(outbox_module, "MAX_BYTES_PER_SEND", 1000)
    box = Outbox("inst", limit=1000)
    _fill(box, 10, text="y" * 300)  # about 320 bytes each: three to a message
    messages = box.take()
    assert [m.operations for m in messages] == [3, 3, 3, 1]
    assert all(len(m.raw) < 1100 for m in messages)
    assert [m.last_operation for m in messages] == [3, 6, 9, 10]


def test_confirm_frees_room_and_the_bound_counts_what_is_sent_but_unconfirmed():
    box = Outbox("inst", limit=10)
    _fill(box, 10)
    assert not box.put("audit_event", {"n": 99})  # full: dropped and counted
    messages = box.take()
    assert not box.put("audit_event", {"n": 99})  # sent is still held until confirmed
    assert box.counts().dropped == 2
    assert box.confirm(messages[-1].seq, None, now=0.0) == 10
    assert box.counts().buffered == 0
    assert box.wait_noticed(10, timeout=0)
    assert not box.wait_confirmed(10, timeout=0)  # the writer's word is not the file's
    assert box.oldest_unverified_since() == 0.0
    assert box.verify(messages[-1].seq) == 10
    assert box.wait_confirmed(10, timeout=0) and box.oldest_unverified_since() is None
    assert box.put("audit_event", {"n": 100})
    assert box.unconfirmed() == []
    assert box.take()[0].seq == messages[-1].seq + 1


def test_notices_the_file_does_not_bear_out_are_taken_back_for_a_resend():
    box = Outbox("inst", limit=100)
    _fill(box, 10)
    messages = box.take()
    box.confirm(messages[0].seq, None, now=1.0)
    assert box.counts().buffered == 10 - messages[0].operations
    assert box.disown_noticed() == 1
    assert box.counts().buffered == 10
    assert box.unconfirmed() == messages  # in order, the taken-back one first
    assert not box.wait_noticed(1, timeout=0)
    # A missed notice: the file alone confirms, and frees the room.
    assert box.verify(messages[-1].seq, rejected=2) == 10
    counts = box.counts()
    assert (counts.buffered, counts.confirmed, counts.rejected) == (0, 10, 2)


def test_a_restart_holds_everything_the_file_lacks_as_a_new_instance_after_its_hello():
    box = Outbox("old", limit=100, token="t" * 32)
    box.put_internal("hello", {"token": "t" * 32})
    _fill(box, 9)
    first = box.take()
    box.confirm(first[-1].seq, 3, now=0.0)  # noticed, never verified: the file went back
    box.put("audit_event", {"n": "late"})
    assert box.restart("new", "u" * 32, {"token": "u" * 32}) == 10
    counts = box.counts()
    assert (counts.buffered, counts.next_seq, counts.rejected) == (11, 1, 3)
    [message] = box.take()
    version, instance_id, seq, token, operations = msgpack.unpackb(message.raw)
    assert (version, instance_id, seq, token) == (codec.PROTOCOL_VERSION, "new", 1, "u" * 32)
    assert operations[0] == ["hello", {"token": "u" * 32}]  # the old hello, replaced
    assert [op[1]["n"] for op in operations[1:]] == [*range(9), "late"]
    assert message.operations == 11 and message.caller_operations == 10
