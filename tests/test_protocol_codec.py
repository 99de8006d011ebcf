"""Unit tests of the msgpack envelope and notices (protocol/codec.py): plain function calls."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from see_persistence.protocol.codec import (
    HEARTBEAT_KIND,
    MAX_MESSAGE_BYTES,
    MAX_OPERATIONS_PER_MESSAGE,
    MAX_SEQ,
    PROTOCOL_VERSION,
    PROTOCOL_VERSION_WITHOUT_TOKEN,
    Envelope,
    InstanceHeartbeat,
    Notice,
    assemble_message,
    decode_incoming,
    decode_message,
    decode_notice,
    encode_commit_notice,
    encode_heartbeat,
    encode_instance_heartbeat,
    encode_message,
    encode_operation,
    token_digest,
)
from see_persistence.protocol.errors import InvalidOperation, RejectedMessage
from see_persistence.protocol.operations import OPERATIONS, validate_operation

pytestmark = pytest.mark.unit

INSTANCE = "0190a6f2-7c3e-7d41-8a9b-1c2d3e4f5a6b"
TOKEN = "5f0c2b8e9d41a7736e0b1c9d2f4a6e80"  # as secrets.token_hex(16) makes them
AT_US = 1_700_000_000_123_456

# One valid payload per operation (test_every_operation_has_a_payload keeps this complete).
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "hello": {
        "pid": 4242,
        "process_create_time": 1_700_000_000.25,
        "host": "build-box",
        "at_us": AT_US,
        "token": TOKEN,
    },
    "goodbye": {"at_us": AT_US},
    "create_workflow": {
        "id": "wf-1",
        "workflow_name": "nightly",
        "metadata": '{"branch":"main"}',
        "at_us": AT_US,
    },
    "update_workflow_status": {
        "id": "wf-1",
        "status": "failed",
        "error_message": "tests failed",
        "at_us": AT_US,
    },
    "create_task": {
        "id": "task-1",
        "workflow_id": "wf-1",
        "task_name": "compile",
        "execution_order": 3,
        "at_us": AT_US,
    },
    "update_task_status": {
        "id": "task-1",
        "status": "completed",
        "output": "ok",
        "error_message": None,
        "at_us": AT_US,
    },
    "append_task_log": {"id": "task-1", "line": "gcc -O2 main.c", "at_us": AT_US},
    "audit_event": {
        "id": "ev-1",
        "event_type": "workflow_completed",
        "message": "done",
        "workflow_id": "wf-1",
        "task_id": None,
        "data": '{"n":1}',
        "at_us": AT_US,
    },
    "prune": {
        "id": "prune-report-1",
        "older_than_us": AT_US - 30 * 86_400_000_000,
        "statuses": ["completed", "failed"],
        "at_us": AT_US,
    },
}
ALL_OPERATIONS: list[tuple[str, dict[str, Any]]] = list(VALID_PAYLOADS.items())


def pack(obj: object) -> bytes:
    """Pack anything with the same options as the codec."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def rejection(raw: object) -> RejectedMessage:
    """Decode `raw`, which must be rejected, and return the rejection."""
    with pytest.raises(RejectedMessage) as info:
        decode_message(raw)  # type: ignore[arg-type]
    return info.value


def goodbye_ops(count: int) -> list[tuple[str, dict[str, Any]]]:
    return [("goodbye", {"at_us": i}) for i in range(count)]


# --- round trips -------------------------------------------------------------------------------


def test_every_operation_has_a_payload() -> None:
    assert set(VALID_PAYLOADS) == set(OPERATIONS)


@pytest.mark.parametrize(("name", "payload"), ALL_OPERATIONS, ids=[n for n, _ in ALL_OPERATIONS])
def test_single_operation_round_trip(name: str, payload: dict[str, Any]) -> None:
    envelope = decode_message(encode_message(INSTANCE, 7, [(name, payload)], TOKEN))
    assert envelope == Envelope(PROTOCOL_VERSION, INSTANCE, 7, [(name, payload)], TOKEN)
    values = validate_operation(*envelope.operations[0])
    assert values == {field.name: payload.get(field.name) for field in OPERATIONS[name]}


def test_all_operations_in_one_message_round_trip() -> None:
    envelope = decode_message(encode_message(INSTANCE, MAX_SEQ, ALL_OPERATIONS, TOKEN))
    assert envelope.version == PROTOCOL_VERSION == 2
    assert envelope.instance_id == INSTANCE
    assert envelope.seq == MAX_SEQ
    assert envelope.token == TOKEN
    assert envelope.operations == ALL_OPERATIONS
    for name, payload in envelope.operations:
        assert validate_operation(name, payload) == {
            field.name: payload.get(field.name) for field in OPERATIONS[name]
        }


def test_a_message_without_a_token_is_version_1_with_four_items() -> None:
    """What clients older than tokens send: still decoded, with no token."""
    raw = encode_message(INSTANCE, 7, [("goodbye", {"at_us": 1})])
    assert msgpack.unpackb(raw) == [1, INSTANCE, 7, [["goodbye", {"at_us": 1}]]]
    envelope = decode_message(raw)
    assert envelope == Envelope(PROTOCOL_VERSION_WITHOUT_TOKEN, INSTANCE, 7, [("goodbye", {"at_us": 1})])
    assert envelope.token is None


def test_a_message_with_a_token_is_version_2_with_the_token_before_the_operations() -> None:
    raw = encode_message(INSTANCE, 7, [("goodbye", {"at_us": 1})], TOKEN)
    assert msgpack.unpackb(raw) == [2, INSTANCE, 7, TOKEN, [["goodbye", {"at_us": 1}]]]


def test_token_digest_is_the_hex_sha256_of_the_token() -> None:
    assert token_digest("0123456789abcdef") == (
        "9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f"
    )
    assert len(token_digest(TOKEN)) == 64
    assert token_digest(TOKEN) != token_digest(TOKEN.upper())


@pytest.mark.parametrize("token", [None, TOKEN, "t" * 16, "t" * 128], ids=["v1", "v2", "shortest", "longest"])
@pytest.mark.parametrize("count", [1, 15, 16, 17, MAX_OPERATIONS_PER_MESSAGE])
def test_assemble_message_matches_encode_message(count: int, token: str | None) -> None:
    ops = goodbye_ops(count)
    assembled = assemble_message(INSTANCE, 12, [encode_operation(n, p) for n, p in ops], token)
    assert assembled == encode_message(INSTANCE, 12, ops, token)
    envelope = decode_message(assembled)
    assert (envelope.operations, envelope.token) == (ops, token)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["v1", "v2"])
def test_assemble_message_with_mixed_operations_matches_encode_message(token: str | None) -> None:
    assembled = assemble_message(INSTANCE, 3, [encode_operation(n, p) for n, p in ALL_OPERATIONS], token)
    assert assembled == encode_message(INSTANCE, 3, ALL_OPERATIONS, token)


@pytest.mark.parametrize("count", [0xFFFF, 0x10000, 70_000])
def test_assemble_message_over_the_operation_limit(count: int) -> None:
    """16-bit and 32-bit array headers: the bytes still match, and decoding rejects them."""
    ops = goodbye_ops(count)
    assembled = assemble_message(INSTANCE, 1, [encode_operation(n, p) for n, p in ops])
    assert assembled == encode_message(INSTANCE, 1, ops)
    error = rejection(assembled)
    assert f"{count} operations in one message; the limit is 4096" in error.reason
    assert (error.instance_id, error.seq) == (INSTANCE, 1)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_decode_accepts_bytes_like(wrap: type) -> None:
    raw = encode_message(INSTANCE, 1, [("goodbye", {"at_us": 1})])
    assert decode_message(wrap(raw)).operations == [("goodbye", {"at_us": 1})]


@pytest.mark.parametrize(
    ("instance_id", "seq", "count"),
    [("i", 1, 1), ("x" * 128, MAX_SEQ, 1), (INSTANCE, 1, MAX_OPERATIONS_PER_MESSAGE)],
    ids=["shortest", "longest-id-and-seq", "most-operations"],
)
def test_decode_accepts_limits(instance_id: str, seq: int, count: int) -> None:
    envelope = decode_message(encode_message(instance_id, seq, goodbye_ops(count)))
    assert (envelope.instance_id, envelope.seq, len(envelope.operations)) == (
        instance_id,
        seq,
        count,
    )


def message_of_size(size: int) -> bytes:
    """A valid message of exactly `size` bytes (one long log line)."""
    base = len(encode_message(INSTANCE, 1, [("append_task_log", {"id": "t", "line": ""})]))
    line_len = size - base - 4  # an empty string is 1 byte; a str32 header is 5
    raw = encode_message(INSTANCE, 1, [("append_task_log", {"id": "t", "line": "x" * line_len})])
    assert len(raw) == size
    return raw


def test_decode_accepts_exactly_max_message_bytes() -> None:
    envelope = decode_message(message_of_size(MAX_MESSAGE_BYTES))
    assert envelope.seq == 1


def test_decode_rejects_one_byte_over_max_message_bytes() -> None:
    error = rejection(message_of_size(MAX_MESSAGE_BYTES + 1))
    assert f"{MAX_MESSAGE_BYTES + 1} bytes; the limit is {MAX_MESSAGE_BYTES}" in error.reason


# --- malformed messages ------------------------------------------------------------------------

GOOD = encode_message(INSTANCE, 5, [("goodbye", {"at_us": 1})])
ONE_OP = [["goodbye", {"at_us": 1}]]

# (raw, distinctive part of the reason, instance_id carried, seq carried)
MALFORMED: dict[str, tuple[object, str, str | None, int | None]] = {
    "str": ("not bytes", "message must be bytes, got str", None, None),
    "none": (None, "message must be bytes, got NoneType", None, None),
    "list": ([1, INSTANCE, 1, ONE_OP], "message must be bytes, got list", None, None),
    "empty": (b"", "empty message", None, None),
    "over-limit-garbage": (b"\x00" * (MAX_MESSAGE_BYTES + 1), "bytes; the limit is", None, None),
    "reserved-byte": (b"\xc1", "not msgpack", None, None),
    "truncated": (GOOD[:-3], "incomplete input", None, None),
    "truncated-header": (GOOD[:1], "not msgpack", None, None),
    "trailing-bytes": (GOOD + b"\x00", "trailing bytes after the message", None, None),
    "bad-utf8": (b"\xa2\xff\xfe", "not valid UTF-8", None, None),
    "bad-utf8-instance": (
        pack([1, INSTANCE, 1, ONE_OP]).replace(INSTANCE.encode(), b"\xff" * len(INSTANCE)),
        "not valid UTF-8",
        None,
        None,
    ),
    "int-map-key": (pack({1: 2}), "not msgpack", None, None),
    "map": (pack({"version": 1}), "must be a msgpack array, got dict", None, None),
    "int": (pack(1), "must be a msgpack array, got int", None, None),
    "string": (pack("hello"), "must be a msgpack array, got str", None, None),
    "nil": (pack(None), "must be a msgpack array, got NoneType", None, None),
    "three-items": (
        pack([1, INSTANCE, 1]),
        "must have 5 items (version 2) or 4 (version 1), got 3",
        None,
        None,
    ),
    "six-items": (pack([2, INSTANCE, 1, TOKEN, ONE_OP, 0]), "or 4 (version 1), got 6", None, None),
    "v1-five-items": (
        pack([1, INSTANCE, 1, ONE_OP, 0]),
        "a version 1 message must have 4 items, got 5",
        None,
        None,
    ),
    "v2-four-items": (
        pack([2, INSTANCE, 1, ONE_OP]),
        "a version 2 message must have 5 items, got 4",
        None,
        None,
    ),
    "zero-items": (pack([]), "or 4 (version 1), got 0", None, None),
    "version-str": (
        pack(["1", INSTANCE, 1, ONE_OP]),
        "version must be an integer, got str",
        None,
        None,
    ),
    "version-float": (
        pack([1.0, INSTANCE, 1, ONE_OP]),
        "version must be an integer, got float",
        None,
        None,
    ),
    "version-bool": (
        pack([True, INSTANCE, 1, ONE_OP]),
        "version must be an integer, got bool",
        None,
        None,
    ),
    "version-3": (pack([3, INSTANCE, 1, TOKEN, ONE_OP]), "unsupported protocol version 3", None, None),
    "version-0": (pack([0, INSTANCE, 1, ONE_OP]), "unsupported protocol version 0", None, None),
    "token-nil": (pack([2, INSTANCE, 4, None, ONE_OP]), "token must be ASCII text of 16 to 128", INSTANCE, 4),
    "token-int": (pack([2, INSTANCE, 4, 7, ONE_OP]), "token must be ASCII text", INSTANCE, 4),
    "token-bin": (pack([2, INSTANCE, 4, TOKEN.encode(), ONE_OP]), "token must be ASCII text", INSTANCE, 4),
    "token-short": (pack([2, INSTANCE, 4, "t" * 15, ONE_OP]), "token must be ASCII text", INSTANCE, 4),
    "token-long": (pack([2, INSTANCE, 4, "t" * 129, ONE_OP]), "token must be ASCII text", INSTANCE, 4),
    "token-not-ascii": (pack([2, INSTANCE, 4, "é" * 16, ONE_OP]), "token must be ASCII text", INSTANCE, 4),
    "v2-seq-0": (pack([2, INSTANCE, 0, TOKEN, ONE_OP]), "seq must be an integer from 1 to", INSTANCE, None),
    "v2-ops-empty": (pack([2, INSTANCE, 5, TOKEN, []]), "operations must be a non-empty array", INSTANCE, 5),
    "instance-empty": (
        pack([1, "", 1, ONE_OP]),
        "instance_id must be a non-empty string",
        None,
        None,
    ),
    "instance-int": (
        pack([1, 42, 1, ONE_OP]),
        "instance_id must be a non-empty string",
        None,
        None,
    ),
    "instance-bin": (
        pack([1, b"id", 1, ONE_OP]),
        "instance_id must be a non-empty string",
        None,
        None,
    ),
    "instance-nil": (
        pack([1, None, 1, ONE_OP]),
        "instance_id must be a non-empty string",
        None,
        None,
    ),
    "instance-too-long": (
        pack([1, "x" * 129, 1, ONE_OP]),
        "at most 128 characters",
        None,
        None,
    ),
    "seq-0": (pack([1, INSTANCE, 0, ONE_OP]), "seq must be an integer from 1 to", INSTANCE, None),
    "seq-negative": (pack([1, INSTANCE, -1, ONE_OP]), "got -1", INSTANCE, None),
    "seq-bool": (pack([1, INSTANCE, True, ONE_OP]), "got True", INSTANCE, None),
    "seq-over-max": (
        pack([1, INSTANCE, MAX_SEQ + 1, ONE_OP]),
        f"got {MAX_SEQ + 1}",
        INSTANCE,
        None,
    ),
    "seq-float": (pack([1, INSTANCE, 1.0, ONE_OP]), "got 1.0", INSTANCE, None),
    "seq-str": (pack([1, INSTANCE, "1", ONE_OP]), "got '1'", INSTANCE, None),
    "ops-map": (
        pack([1, INSTANCE, 5, {"goodbye": {}}]),
        "operations must be a non-empty array",
        INSTANCE,
        5,
    ),
    "ops-str": (
        pack([1, INSTANCE, 5, "goodbye"]),
        "operations must be a non-empty array",
        INSTANCE,
        5,
    ),
    "ops-nil": (pack([1, INSTANCE, 5, None]), "operations must be a non-empty array", INSTANCE, 5),
    "ops-empty": (pack([1, INSTANCE, 5, []]), "operations must be a non-empty array", INSTANCE, 5),
    "ops-too-many": (
        pack([1, INSTANCE, 5, ONE_OP * (MAX_OPERATIONS_PER_MESSAGE + 1)]),
        "4097 operations in one message; the limit is 4096",
        INSTANCE,
        5,
    ),
    "op-bare-name": (
        pack([1, INSTANCE, 5, ["goodbye"]]),
        "operation 0 must be a [name, payload] pair",
        INSTANCE,
        5,
    ),
    "op-one-item": (
        pack([1, INSTANCE, 5, [*ONE_OP, ["goodbye"]]]),
        "operation 1 must be a [name, payload] pair",
        INSTANCE,
        5,
    ),
    "op-three-items": (
        pack([1, INSTANCE, 5, [*ONE_OP, *ONE_OP, ["goodbye", {}, {}]]]),
        "operation 2 must be a [name, payload] pair",
        INSTANCE,
        5,
    ),
    "op-map": (
        pack([1, INSTANCE, 5, [{"goodbye": {"at_us": 1}}]]),
        "operation 0 must be a [name, payload] pair",
        INSTANCE,
        5,
    ),
}


@pytest.mark.parametrize(("raw", "reason", "instance_id", "seq"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_message_is_rejected_with_reason(
    raw: object, reason: str, instance_id: str | None, seq: int | None
) -> None:
    error = rejection(raw)
    assert reason in error.reason
    assert str(error) == error.reason
    assert (error.instance_id, error.seq) == (instance_id, seq)


def test_rejected_seq_reason_is_bounded() -> None:
    error = rejection(pack([1, INSTANCE, ["x" * 1000] * 10, ONE_OP]))
    assert error.reason.startswith("seq must be an integer")
    assert len(error.reason) <= 300


def test_operations_are_returned_unchecked() -> None:
    """Validating operations is validate_operation's job: the envelope carries them as sent."""
    raw = pack([1, INSTANCE, 2, [["no_such_op", None], [7, {"x": [1, 2]}]]])
    assert decode_message(raw).operations == [("no_such_op", None), (7, {"x": [1, 2]})]


# --- notices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [False, True])
def test_commit_notice_round_trip(gap: bool) -> None:
    frames = encode_commit_notice(INSTANCE, 3, 41, gap=gap, rejected=2)
    assert frames[0] == b"c" + INSTANCE.encode()
    assert decode_notice(frames) == Notice(INSTANCE, 3, 41, gap, 2)


def test_commit_notice_gap_defaults_to_false() -> None:
    assert decode_notice(encode_commit_notice("é-instance", 1, 0)) == Notice("é-instance", 1, 0, False, 0)


def test_a_notice_carries_four_items_unless_the_instance_is_unknown() -> None:
    """A client of the previous version decodes only three or four items: it still gets these."""
    frames = encode_commit_notice(INSTANCE, 3, 41, gap=True, rejected=2)
    assert msgpack.unpackb(frames[1]) == [3, 41, True, 2]
    assert decode_notice(frames).unknown is False


def test_an_unknown_instance_notice_round_trips_with_its_fifth_item() -> None:
    frames = encode_commit_notice(INSTANCE, 3, 0, gap=True, unknown=True)
    assert msgpack.unpackb(frames[1]) == [3, 0, True, 0, True]
    assert decode_notice(frames) == Notice(INSTANCE, 3, 0, True, 0, True)


def test_a_five_item_notice_saying_false_is_not_unknown() -> None:
    frames = [b"c" + INSTANCE.encode(), msgpack.packb([3, 41, False, 0, False])]
    assert decode_notice(frames) == Notice(INSTANCE, 3, 41, False, 0, False)


@pytest.mark.parametrize("bad", [1, 0, "yes", None, []])
def test_a_notice_whose_unknown_flag_is_not_a_boolean_is_refused(bad: object) -> None:
    frames = [b"c" + INSTANCE.encode(), msgpack.packb([3, 41, False, 0, bad])]
    with pytest.raises(RejectedMessage, match="unknown flag is a boolean"):
        decode_notice(frames)


def test_a_notice_of_an_older_writer_carries_no_rejected_count() -> None:
    frames = [b"c" + INSTANCE.encode(), msgpack.packb([3, 41, False])]
    assert decode_notice(frames) == Notice(INSTANCE, 3, 41, False, None)


@pytest.mark.parametrize("bad", [-1, "2", 1.5, None])
def test_a_notice_with_a_bad_rejected_count_is_refused(bad: object) -> None:
    frames = [b"c" + INSTANCE.encode(), msgpack.packb([3, 41, False, bad])]
    if bad is None:
        assert decode_notice(frames).rejected is None
    else:
        with pytest.raises(RejectedMessage):
            decode_notice(frames)


def test_heartbeat_round_trip() -> None:
    frames = encode_heartbeat(9)
    assert frames[0] == b"h"
    notice = decode_notice(frames)
    assert notice == Notice(None, 9)
    assert (notice.committed_seq, notice.gap) == (None, False)


MALFORMED_NOTICES: dict[str, tuple[list[bytes], str]] = {
    "no-frames": ([], "a notice has two frames"),
    "one-frame": ([b"h"], "a notice has two frames"),
    "three-frames": ([b"h", pack([1]), b""], "a notice has two frames"),
    "body-not-msgpack": ([b"h", b"\xc1"], "notice is not msgpack"),
    "body-truncated": ([b"h", b""], "notice is not msgpack"),
    "unknown-topic": ([b"x", pack([1])], "unknown notice"),
    "heartbeat-two-values": ([b"h", pack([1, 2])], "unknown notice"),
    "heartbeat-not-array": ([b"h", pack(1)], "unknown notice"),
    "commit-two-values": ([b"cabc", pack([1, 2])], "unknown notice"),
    "commit-six-values": ([b"cabc", pack([1, 2, False, 0, True, 0])], "unknown notice"),
    "commit-not-array": ([b"cabc", pack({"epoch": 1})], "unknown notice"),
}


@pytest.mark.parametrize(("frames", "reason"), MALFORMED_NOTICES.values(), ids=list(MALFORMED_NOTICES))
def test_malformed_notice_is_rejected(frames: list[bytes], reason: str) -> None:
    with pytest.raises(RejectedMessage) as info:
        decode_notice(frames)
    assert reason in info.value.reason


BAD_VALUE_NOTICES: dict[str, list[bytes]] = {
    "heartbeat-epoch-text": [b"h", pack(["x"])],
    "heartbeat-epoch-nil": [b"h", pack([None])],
    "commit-seq-text": [b"cabc", pack([1, "x", False])],
    "commit-topic-not-utf8": [b"c\xff", pack([1, 2, False])],
}


@pytest.mark.parametrize("frames", BAD_VALUE_NOTICES.values(), ids=list(BAD_VALUE_NOTICES))
def test_notice_with_bad_values_is_rejected(frames: list[bytes]) -> None:
    with pytest.raises(RejectedMessage):
        decode_notice(frames)


# --- properties: nothing but an Envelope / RejectedMessage / InvalidOperation comes out ---------

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def msgpack_values(*, decodable: bool) -> st.SearchStrategy[Any]:
    """Nested msgpack-able values; `decodable` ones unpack back to an equal value (no NaN, and
    only the str/bin map keys the unpacker's strict_map_key accepts)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        INT64,
        st.floats(allow_nan=not decodable, allow_infinity=True),
        st.text(max_size=20),
        st.binary(max_size=20),
    )
    keys = st.one_of(st.text(max_size=8), st.binary(max_size=8))
    if not decodable:
        keys = st.one_of(keys, INT64, st.none())
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=10,
    )


MSGPACKABLE = msgpack_values(decodable=False)
DECODABLE = msgpack_values(decodable=True)
FIELD_NAMES = sorted({field.name for fields in OPERATIONS.values() for field in fields})
FIELD_VALUES = st.one_of(
    DECODABLE,
    st.sampled_from(["running", "COMPLETED", "{}", '{"a":1}', "[]", "wf-1", "", " "]),
    st.integers(min_value=-5, max_value=5),
)
PAYLOADS = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=5)), FIELD_VALUES, max_size=8),
    DECODABLE,
)


@st.composite
def mutated_operation(draw: st.DrawFn) -> list[Any]:
    """A valid [name, payload] pair with up to three fields set to odd values or removed."""
    name = draw(st.sampled_from(sorted(VALID_PAYLOADS)))
    payload: dict[Any, Any] = dict(VALID_PAYLOADS[name])
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.one_of(st.sampled_from(sorted(payload) or ["at_us"]), st.text(max_size=5)))
        if draw(st.booleans()):
            payload.pop(key, None)
        else:
            payload[key] = draw(FIELD_VALUES)
    return [name, payload]


RAW_PAIRS = st.tuples(st.one_of(st.sampled_from(sorted(OPERATIONS)), DECODABLE), PAYLOADS)
OPERATION_PAIRS = st.lists(st.one_of(mutated_operation(), RAW_PAIRS.map(list)), min_size=0, max_size=4)
TOKENS = st.text(alphabet=st.characters(max_codepoint=127), min_size=16, max_size=128)
ENVELOPE_SHAPED = st.one_of(
    st.tuples(
        st.one_of(st.just(PROTOCOL_VERSION_WITHOUT_TOKEN), MSGPACKABLE),
        st.one_of(st.just(INSTANCE), st.text(max_size=130), MSGPACKABLE),
        st.one_of(st.integers(min_value=-1, max_value=3), INT64, MSGPACKABLE),
        st.one_of(OPERATION_PAIRS, MSGPACKABLE),
    ),
    st.tuples(
        st.one_of(st.just(PROTOCOL_VERSION), MSGPACKABLE),
        st.one_of(st.just(INSTANCE), st.text(max_size=130), MSGPACKABLE),
        st.one_of(st.integers(min_value=-1, max_value=3), INT64, MSGPACKABLE),
        st.one_of(st.just(TOKEN), TOKENS, st.text(max_size=140), MSGPACKABLE),
        st.one_of(OPERATION_PAIRS, MSGPACKABLE),
    ),
).map(list)
VALID_ENVELOPES = st.tuples(
    st.just(PROTOCOL_VERSION),
    st.one_of(st.just(INSTANCE), st.text(min_size=1, max_size=128)),
    st.integers(min_value=1, max_value=MAX_SEQ),
    st.one_of(st.just(TOKEN), TOKENS),
    st.lists(st.one_of(mutated_operation(), RAW_PAIRS.map(list)), min_size=1, max_size=4),
).map(list)

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
STRUCTURED_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=200)  # slower examples: fewer


def decode_and_validate(raw: bytes) -> None:
    """Decode `raw` and validate each operation; only the protocol's own errors may escape."""
    try:
        envelope = decode_message(raw)
    except RejectedMessage as exc:
        assert isinstance(exc.reason, str)
        assert exc.reason
        return
    assert isinstance(envelope, Envelope)
    for name, payload in envelope.operations:
        try:
            values = validate_operation(name, payload)
        except InvalidOperation as exc:
            assert isinstance(exc.reason, str)
            assert exc.reason
        else:
            assert isinstance(values, dict)
            assert set(values) == {field.name for field in OPERATIONS[name]}


@PROPERTY_SETTINGS
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_reject(raw: bytes) -> None:
    decode_and_validate(raw)


@PROPERTY_SETTINGS
@given(MSGPACKABLE)
def test_arbitrary_msgpack_decodes_or_rejects(obj: Any) -> None:
    decode_and_validate(pack(obj))


@pytest.mark.slow
@STRUCTURED_SETTINGS
@given(ENVELOPE_SHAPED)
def test_envelope_shaped_msgpack_decodes_or_rejects(obj: list[Any]) -> None:
    decode_and_validate(pack(obj))


@pytest.mark.slow
@STRUCTURED_SETTINGS
@given(VALID_ENVELOPES)
def test_valid_envelopes_with_odd_operations_decode_and_validate_or_reject(obj: list[Any]) -> None:
    envelope = decode_message(pack(obj))
    assert envelope.token == obj[3]
    assert envelope.operations == [tuple(op) for op in obj[4]]
    decode_and_validate(pack(obj))


@PROPERTY_SETTINGS
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=200))
def test_corrupted_valid_message_decodes_or_rejects(noise: bytes, position: int) -> None:
    raw = encode_message(INSTANCE, 1, ALL_OPERATIONS, TOKEN)
    cut = position % len(raw)
    decode_and_validate(raw[:cut] + noise + raw[cut + len(noise) :])


# --- instance heartbeats (an instance on another host than the writer's) ------------------------


def test_an_instance_heartbeat_round_trips() -> None:
    raw = encode_instance_heartbeat(INSTANCE, TOKEN, AT_US)
    assert decode_incoming(raw) == InstanceHeartbeat(INSTANCE, TOKEN, AT_US)
    assert msgpack.unpackb(raw) == [HEARTBEAT_KIND, INSTANCE, TOKEN, AT_US]


def test_an_instance_heartbeat_is_small() -> None:
    assert len(encode_instance_heartbeat(INSTANCE, TOKEN, AT_US)) < 100


def test_decode_incoming_returns_messages_as_decode_message_does() -> None:
    raw = encode_message(INSTANCE, 3, [("goodbye", {"at_us": AT_US})], TOKEN)
    assert decode_incoming(raw) == decode_message(raw)


def test_decode_message_refuses_a_heartbeat() -> None:
    with pytest.raises(RejectedMessage, match="version must be an integer, got str"):
        decode_message(encode_instance_heartbeat(INSTANCE, TOKEN, AT_US))


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([HEARTBEAT_KIND, INSTANCE, TOKEN], "a heartbeat must have 4 items, got 3"),
        ([HEARTBEAT_KIND, INSTANCE, TOKEN, AT_US, 1], "a heartbeat must have 4 items, got 5"),
        ([HEARTBEAT_KIND, "", TOKEN, AT_US], "instance_id must be a non-empty string"),
        ([HEARTBEAT_KIND, 7, TOKEN, AT_US], "instance_id must be a non-empty string"),
        ([HEARTBEAT_KIND, "i" * 129, TOKEN, AT_US], "instance_id must be a non-empty string"),
        ([HEARTBEAT_KIND, INSTANCE, "short", AT_US], "token must be ASCII text of 16 to 128"),
        ([HEARTBEAT_KIND, INSTANCE, None, AT_US], "token must be ASCII text of 16 to 128"),
        ([HEARTBEAT_KIND, INSTANCE, TOKEN, -1], "sent_at_us must be integer microseconds"),
        ([HEARTBEAT_KIND, INSTANCE, TOKEN, 1.5], "sent_at_us must be integer microseconds"),
        ([HEARTBEAT_KIND, INSTANCE, TOKEN, True], "sent_at_us must be integer microseconds"),
        ([HEARTBEAT_KIND, INSTANCE, TOKEN, 2**63], "sent_at_us must be integer microseconds"),
        (["heartbeats", INSTANCE, TOKEN, AT_US], "version must be an integer, got str"),
    ],
)
def test_a_malformed_heartbeat_is_rejected_with_reason(obj: list[Any], reason: str) -> None:
    with pytest.raises(RejectedMessage, match=reason):
        decode_incoming(msgpack.packb(obj))


def test_a_rejected_heartbeat_names_its_instance_when_it_could_be_read() -> None:
    with pytest.raises(RejectedMessage) as caught:
        decode_incoming(msgpack.packb([HEARTBEAT_KIND, INSTANCE, TOKEN, "soon"]))
    assert caught.value.instance_id == INSTANCE and caught.value.seq is None


@PROPERTY_SETTINGS
@given(st.lists(MSGPACKABLE, min_size=0, max_size=5))
def test_heartbeat_shaped_msgpack_decodes_or_rejects(rest: list[Any]) -> None:
    try:
        decoded = decode_incoming(pack([HEARTBEAT_KIND, *rest]))
    except RejectedMessage as exc:
        assert exc.reason
    else:
        assert isinstance(decoded, InstanceHeartbeat)
