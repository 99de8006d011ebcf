"""The msgpack envelope between a Client and the writer, and its limits.

A message is one msgpack array, in one of two versions::

    [2, instance_id, seq, token, operations]     version 2 (PROTOCOL_VERSION): what Clients send
    [1, instance_id, seq, operations]            version 1: clients older than tokens

    version      int   2 or 1; any other value is rejected, never guessed at
    instance_id  str   the sending GUI instance (a UUID string)
    seq          int   1, 2, 3, ... per instance; the writer applies seq N only after N-1
    token        str   the instance's secret, MIN_TOKEN_CHARS to MAX_TOKEN_CHARS ASCII characters
                       (the Client's: secrets.token_hex(16)); the same in every message of
                       the instance, and in the `token` field of its hello
    operations   list  1..MAX_OPERATIONS_PER_MESSAGE items, each [name: str, payload: map]

An instance belongs to the sender of its first hello: the writer keeps sha256(token) of that
hello (`token_digest`) and applies a later message of the instance only if it carries the
same token, or, for an instance registered without one (a version 1 hello), no token. A
version 1 message is still accepted for such an instance, and only for one.

An instance on another host than the writer's also sends heartbeats on the same socket,
while it has nothing else to send (`InstanceHeartbeat`)::

    ["heartbeat", instance_id, token, sent_at_us]

    "heartbeat"  str   HEARTBEAT_KIND, where a message has its version
    instance_id  str   as in a message
    token        str   as in a version 2 message: only the instance's owner keeps it alive
    sent_at_us   int   the sender's wall clock when it sent it, microseconds since the epoch

A heartbeat has no sequence number: nothing keeps it, nothing resends it, and the next one
says the same. The writer counts it as hearing from the instance and compares `sent_at_us`
with its own clock (clock skew). One that is malformed is a dead letter like any bad message;
a writer older than heartbeats refuses every one ("version must be an integer").

Payload maps are described in `operations.OPERATIONS`. A whole message is at most
MAX_MESSAGE_BYTES (the writer's socket enforces the same limit with ZMQ_MAXMSGSIZE).

Commit notices travel the other way on the writer's PUB socket, as two frames::

    topic    b"c" + instance_id (utf-8)    payload msgpack [epoch, committed_seq, gap, rejected]
                                                   or [epoch, committed_seq, gap, rejected, unknown]
    topic    b"h"                          payload msgpack [epoch]   (heartbeat, ~2 per second)

A notice with `gap` true says the writer received a later message of that instance but not
the next one (lost with a dead writer): the client resends from committed_seq + 1.
`rejected` is how many operations of that instance the writer has refused so far, ever (each
one a dead letter with its reason); a writer of an older version sends three items, no count.
`unknown` (a fifth item, sent only when true) says the file has no row of that instance and
the message did not register it (it did not start with a hello at seq 1): nothing of it was
applied, and the client must register again (a restored file may not know the instance). Such
a notice also says `gap` with committed_seq 0, so that a client of an older version resends
from seq 1, whose hello registers it if it still holds that message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from .errors import RejectedMessage
from .operations import MAX_TOKEN_CHARS, MIN_TOKEN_CHARS
from .timestamps import MAX_TIMESTAMP_US

PROTOCOL_VERSION = 2
PROTOCOL_VERSION_WITHOUT_TOKEN = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION_WITHOUT_TOKEN, PROTOCOL_VERSION)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one operation may carry up to ~8 MiB of UTF-8
MAX_OPERATIONS_PER_MESSAGE = 4096
MAX_SEQ = 2**63 - 1
_MAX_INSTANCE_ID_CHARS = 128

HEARTBEAT_KIND = "heartbeat"

NOTICE_COMMIT_PREFIX = b"c"
NOTICE_HEARTBEAT = b"h"


class Envelope(NamedTuple):
    """A decoded message: who sent it, its sequence number, its raw operations, its token."""

    # A NamedTuple, not a frozen dataclass: the writer makes one per message, and a frozen
    # dataclass's __init__ (object.__setattr__ per field) cost 0.8 µs of it, this 0.25 µs.
    version: int
    instance_id: str
    seq: int
    operations: list[tuple[str, Any]]
    token: str | None = None  # None: a version 1 message


class InstanceHeartbeat(NamedTuple):
    """A decoded heartbeat of an instance: who, its token, and its sender's clock at sending."""

    instance_id: str
    token: str
    sent_at_us: int


def encode_instance_heartbeat(instance_id: str, token: str, sent_at_us: int) -> bytes:
    """Pack one instance heartbeat (see the module docstring)."""
    packed: bytes = msgpack.packb([HEARTBEAT_KIND, instance_id, token, sent_at_us], use_bin_type=True)
    return packed


def token_digest(token: str) -> str:
    """The hex SHA-256 of an instance token: what the writer keeps in instances.token_hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def _header(instance_id: str, seq: int, token: str | None) -> list[Any]:
    if token is None:
        return [PROTOCOL_VERSION_WITHOUT_TOKEN, instance_id, seq]
    return [PROTOCOL_VERSION, instance_id, seq, token]


def encode_message(
    instance_id: str, seq: int, operations: list[tuple[str, dict[str, Any]]], token: str | None = None
) -> bytes:
    """Pack one message: version 2 with `token`, version 1 without; the operations are validated."""
    packed: bytes = msgpack.packb(
        [*_header(instance_id, seq, token), [[name, payload] for name, payload in operations]],
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


def assemble_message(
    instance_id: str, seq: int, packed_operations: list[bytes], token: str | None = None
) -> bytes:
    """Build a message from operations packed by encode_operation (same bytes as encode_message)."""
    items = _header(instance_id, seq, token)
    header = msgpack.packb(items, use_bin_type=True)
    return b"".join(
        (
            _array_header(len(items) + 1),
            header[1:],  # the items before the operations, without their own (fixarray) header
            _array_header(len(packed_operations)),
            *packed_operations,
        )
    )


def decode_incoming(raw: bytes) -> Envelope | InstanceHeartbeat:
    """Unpack and check what arrived on the writer's socket: a message or an instance heartbeat.

    Raises RejectedMessage as decode_message does, for a malformed heartbeat too.
    """
    obj = _unpack(raw)
    if obj and obj[0] == HEARTBEAT_KIND:
        return _heartbeat(obj)
    return _envelope(obj)


def _heartbeat(obj: list[Any]) -> InstanceHeartbeat:
    if len(obj) != 4:
        raise RejectedMessage(f"a heartbeat must have 4 items, got {len(obj)}")
    _, instance_id, token, sent_at_us = obj
    if not isinstance(instance_id, str) or not instance_id or len(instance_id) > _MAX_INSTANCE_ID_CHARS:
        raise RejectedMessage("a heartbeat's instance_id must be a non-empty string of at most 128 chars")
    if not (type(token) is str and MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS and token.isascii()):
        raise RejectedMessage(
            f"a heartbeat's token must be ASCII text of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters",
            instance_id=instance_id,
        )
    if type(sent_at_us) is not int or not 0 <= sent_at_us <= MAX_TIMESTAMP_US:
        raise RejectedMessage(
            f"a heartbeat's sent_at_us must be integer microseconds since 1970, got {sent_at_us!r}"[:300],
            instance_id=instance_id,
        )
    return InstanceHeartbeat(instance_id, token, sent_at_us)


def decode_message(raw: bytes) -> Envelope:
    """Unpack and check the envelope of one message.

    Raises RejectedMessage with a precise reason (and the instance id and seq when they
    could be read) for anything that is not a well-formed envelope. The operations are
    returned unchecked: each one is validated on its own, so one bad operation does not
    cost the others in the same message.
    """
    return _envelope(_unpack(raw))


def _unpack(raw: bytes) -> list[Any]:
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
    return obj


def _envelope(obj: list[Any]) -> Envelope:
    if len(obj) not in (4, 5):
        raise RejectedMessage(f"message must have 5 items (version 2) or 4 (version 1), got {len(obj)}")
    version = obj[0]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RejectedMessage(f"version must be an integer, got {type(version).__name__}")
    if version not in SUPPORTED_VERSIONS:
        raise RejectedMessage(f"unsupported protocol version {version}; this writer speaks 2 and 1")
    token: Any = None
    if version == PROTOCOL_VERSION:
        if len(obj) != 5:
            raise RejectedMessage(f"a version 2 message must have 5 items, got {len(obj)}")
        _, instance_id, seq, token, operations = obj
    else:
        if len(obj) != 4:
            raise RejectedMessage(f"a version 1 message must have 4 items, got {len(obj)}")
        _, instance_id, seq, operations = obj
    if not isinstance(instance_id, str) or not instance_id or len(instance_id) > _MAX_INSTANCE_ID_CHARS:
        raise RejectedMessage("instance_id must be a non-empty string of at most 128 characters")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise RejectedMessage(
            f"seq must be an integer from 1 to {MAX_SEQ}, got {seq!r}"[:300], instance_id=instance_id
        )
    if version == PROTOCOL_VERSION and not (
        type(token) is str and MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS and token.isascii()
    ):
        raise RejectedMessage(
            f"token must be ASCII text of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters",
            instance_id=instance_id,
            seq=seq,
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
    return Envelope(version, instance_id, seq, checked, token)


def encode_commit_notice(
    instance_id: str,
    epoch: int,
    committed_seq: int,
    gap: bool = False,
    rejected: int = 0,
    unknown: bool = False,
) -> list[bytes]:
    """The two frames telling one instance how far its messages are committed, how many of its
    operations were refused so far, and (only when true) that the file does not know it."""
    # Four items unless `unknown`: a client of the previous version decodes them.
    values = [epoch, committed_seq, gap, rejected, True] if unknown else [epoch, committed_seq, gap, rejected]
    return [NOTICE_COMMIT_PREFIX + instance_id.encode(), msgpack.packb(values)]


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
    unknown: bool = False  # the file has no row of this instance: register again


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
    if topic.startswith(NOTICE_COMMIT_PREFIX) and len(topic) > 1 and len(values) in (3, 4, 5):
        try:
            instance_id = topic[1:].decode()
        except UnicodeDecodeError:
            raise RejectedMessage("a notice topic is not UTF-8") from None
        rejected = values[3] if len(values) >= 4 else None
        if rejected is not None and (not _is_int(rejected) or rejected < 0):
            raise RejectedMessage("a notice's rejected count is a non-negative integer")
        unknown = values[4] if len(values) == 5 else False
        if not isinstance(unknown, bool):
            raise RejectedMessage("a notice's unknown flag is a boolean")
        return Notice(instance_id, values[0], values[1], bool(values[2]), rejected, unknown)
    raise RejectedMessage("unknown notice")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
