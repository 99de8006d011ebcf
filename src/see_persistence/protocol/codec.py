"""The msgpack envelope between a Client and the writer, and its limits.

A message is one msgpack array of four items::

    [version, instance_id, seq, operations]

    version      int   PROTOCOL_VERSION; any other value is rejected, never guessed at
    instance_id  str   the sending GUI instance (a UUID string)
    seq          int   1, 2, 3, ... per instance; the writer applies seq N only after N-1
    operations   list  1..MAX_OPERATIONS_PER_MESSAGE items, each [name: str, payload: map]

Payload maps are described in `operations.OPERATIONS`. A whole message is at most
MAX_MESSAGE_BYTES (the writer's socket enforces the same limit with ZMQ_MAXMSGSIZE).

Commit notices travel the other way on the writer's PUB socket, as two frames::

    topic    b"c" + instance_id (utf-8)    payload msgpack [epoch, committed_seq, gap, rejected]
    topic    b"h"                          payload msgpack [epoch]   (heartbeat, ~2 per second)

A notice with `gap` true says the writer received a later message of that instance but not
the next one (lost with a dead writer): the client resends from committed_seq + 1.
`rejected` is how many operations of that instance the writer has refused so far, ever (each
one a dead letter with its reason); a writer of an older version sends three items, no count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import RejectedMessage

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one operation may carry up to ~8 MiB of UTF-8
MAX_OPERATIONS_PER_MESSAGE = 4096
MAX_SEQ = 2**63 - 1
_MAX_INSTANCE_ID_CHARS = 128

NOTICE_COMMIT_PREFIX = b"c"
NOTICE_HEARTBEAT = b"h"


@dataclass(frozen=True)
class Envelope:
    """A decoded message: who sent it, its sequence number, and its raw operations."""

    version: int
    instance_id: str
    seq: int
    operations: list[tuple[str, Any]]


def encode_message(instance_id: str, seq: int, operations: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Pack one message; the caller has validated the operations."""
    packed: bytes = msgpack.packb(
        [PROTOCOL_VERSION, instance_id, seq, [[name, payload] for name, payload in operations]],
        use_bin_type=True,
    )
    return packed


def encode_operation(name: str, payload: Any) -> bytes:
    """Pack one [name, payload] operation: a Client packs each once, and a dead-letter row
    stores one that failed on its own."""
    packed: bytes = msgpack.packb([name, payload], use_bin_type=True, default=repr)
    return packed


def operation_packer() -> Callable[[Sequence[Any]], bytes]:
    """A packer of [name, payload] operations, with the same bytes as encode_operation.

    Reusing one packer halves the cost of packing a small operation; it is not thread-safe,
    so each user keeps its own (or packs under its own lock).
    """
    packer = msgpack.Packer(use_bin_type=True, default=repr)
    pack: Callable[[Sequence[Any]], bytes] = packer.pack
    return pack


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def assemble_message(instance_id: str, seq: int, packed_operations: list[bytes]) -> bytes:
    """Build a message from operations packed by encode_operation (same bytes as encode_message)."""
    header = msgpack.packb([PROTOCOL_VERSION, instance_id, seq], use_bin_type=True)
    return b"".join(
        (
            _array_header(4),
            header[1:],  # the three items without their own 3-item array header
            _array_header(len(packed_operations)),
            *packed_operations,
        )
    )


def decode_message(raw: bytes) -> Envelope:
    """Unpack and check the envelope of one message.

    Raises RejectedMessage with a precise reason (and the instance id and seq when they
    could be read) for anything that is not a well-formed envelope. The operations are
    returned unchecked: each one is validated on its own, so one bad operation does not
    cost the others in the same message.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise RejectedMessage(f"message must be bytes, got {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RejectedMessage(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if len(raw) == 0:
        raise RejectedMessage("empty message")
    try:
        obj = msgpack.unpackb(
            raw,
            raw=False,
        )
    except msgpack.ExtraData:
        raise RejectedMessage("trailing bytes after the message") from None
    except UnicodeDecodeError:
        raise RejectedMessage("a string is not valid UTF-8") from None
    except Exception as exc:  # the unpacker raises several types for malformed input
        raise RejectedMessage(f"not msgpack: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(obj, list):
        raise RejectedMessage(f"message must be a msgpack array, got {type(obj).__name__}")
    if len(obj) != 4:
        raise RejectedMessage(f"message must have 4 items, got {len(obj)}")
    version, instance_id, seq, operations = obj
    if isinstance(version, bool) or not isinstance(version, int):
        raise RejectedMessage(f"version must be an integer, got {type(version).__name__}")
    if version != PROTOCOL_VERSION:
        raise RejectedMessage(
            f"unsupported protocol version {version}; this writer speaks {PROTOCOL_VERSION}"
        )
    if not isinstance(instance_id, str) or not instance_id or len(instance_id) > _MAX_INSTANCE_ID_CHARS:
        raise RejectedMessage("instance_id must be a non-empty string of at most 128 characters")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise RejectedMessage(
            f"seq must be an integer from 1 to {MAX_SEQ}, got {seq!r}"[:300], instance_id=instance_id
        )
    if not isinstance(operations, list) or not operations:
        raise RejectedMessage("operations must be a non-empty array", instance_id=instance_id, seq=seq)
    if len(operations) > MAX_OPERATIONS_PER_MESSAGE:
        raise RejectedMessage(
            f"{len(operations)} operations in one message; the limit is {MAX_OPERATIONS_PER_MESSAGE}",
            instance_id=instance_id,
            seq=seq,
        )
    checked: list[tuple[str, Any]] = []
    for index, op in enumerate(operations):
        if not isinstance(op, list) or len(op) != 2:
            raise RejectedMessage(
                f"operation {index} must be a [name, payload] pair", instance_id=instance_id, seq=seq
            )
        checked.append((op[0], op[1]))
    return Envelope(version=version, instance_id=instance_id, seq=seq, operations=checked)


def encode_commit_notice(
    instance_id: str, epoch: int, committed_seq: int, gap: bool = False, rejected: int = 0
) -> list[bytes]:
    """The two frames telling one instance how far its messages are committed, and how many
    of its operations were refused so far."""
    return [
        NOTICE_COMMIT_PREFIX + instance_id.encode(),
        msgpack.packb([epoch, committed_seq, gap, rejected]),
    ]


def encode_heartbeat(epoch: int) -> list[bytes]:
    """The two frames of a writer heartbeat."""
    return [NOTICE_HEARTBEAT, msgpack.packb([epoch])]


@dataclass(frozen=True)
class Notice:
    """A decoded notice: a heartbeat (instance_id None) or one instance's commit progress."""

    instance_id: str | None
    epoch: int
    committed_seq: int | None = None
    gap: bool = False
    rejected: int | None = None  # None: the writer did not say (an older version)


def decode_notice(frames: list[bytes]) -> Notice:
    """Decode the two frames of a notice from the writer's PUB socket."""
    if len(frames) != 2:
        raise RejectedMessage("a notice has two frames")
    topic, body = frames
    try:
        values = msgpack.unpackb(body)
    except Exception as exc:
        raise RejectedMessage(f"notice is not msgpack: {exc}") from None
    if not isinstance(values, list):
        raise RejectedMessage("unknown notice")
    if not all(_is_int(v) for v in values[:2]):
        raise RejectedMessage("a notice carries integers")
    if topic == NOTICE_HEARTBEAT and len(values) == 1:
        return Notice(None, values[0])
    if topic.startswith(NOTICE_COMMIT_PREFIX) and len(topic) > 1 and len(values) in (3, 4):
        try:
            instance_id = topic[1:].decode()
        except UnicodeDecodeError:
            raise RejectedMessage("a notice topic is not UTF-8") from None
        rejected = values[3] if len(values) == 4 else None
        if rejected is not None and (not _is_int(rejected) or rejected < 0):
            raise RejectedMessage("a notice's rejected count is a non-negative integer")
        return Notice(instance_id, values[0], values[1], bool(values[2]), rejected)
    raise RejectedMessage("unknown notice")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
