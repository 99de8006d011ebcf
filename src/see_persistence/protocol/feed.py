"""The change feed's notices: what one writer commit changed, as the writer publishes it.

Sans-I/O, like the codec: records in, frames out, and back. The writer numbers every commit
(writer_lease.commit_seq, monotonic per database) and publishes one notice per commit on its
PUB socket, after the COMMIT, so a watcher that re-reads on a notice always sees the change.

Frames::

    topic    b"f"      no existing subscription (b"h", b"c" + instance id) is a prefix of it
    payload  msgpack [FEED_VERSION, feed_id, seq, epoch, flags, body, committed_at_us]
             body: [[kind, id, workflow_id, status], ...]   at most MAX_RECORDS, or, with
                   OVERFLOW set, [count, [workflow_id, ...] or nil]
             committed_at_us: the writer's wall clock when its COMMIT returned, in µs since
                   the Unix epoch; a notice without it (six items) is read as not saying

`feed_id` is drawn at random each time a writer takes the lease: a watcher that sees it
change cannot vouch for what happened in between, nor can one that sees `seq` skip a number.

Changes are coalesced per commit and per record: a record changed several times in one
commit is one change, with the last status it was given, at the place it first appeared. A
change may name a record whose operation then failed (it became a dead letter): re-reading
shows nothing new then; what the feed never does is leave a committed change unreported.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import RejectedMessage
from .operations import (
    APPEND_TASK_LOG,
    AUDIT_EVENT,
    CREATE_TASK,
    CREATE_WORKFLOW,
    GOODBYE,
    HELLO,
    UPDATE_TASK_STATUS,
    UPDATE_WORKFLOW_STATUS,
)

FEED_TOPIC = b"f"
FEED_VERSION = 1
# A notice lists at most this many records; past it, only the workflows they belong to (up to
# this many) or just how many operations the commit applied: a batch of thousands of operations
# is one small notice, and the watcher re-reads what it shows.
MAX_RECORDS = 64


class Kind(str, enum.Enum):
    """What kind of record a change is about; compares equal to its text."""

    WORKFLOW = "workflow"
    TASK = "task"
    TASK_LOG = "task_log"
    AUDIT_EVENT = "audit_event"
    INSTANCE = "instance"

    def __str__(self) -> str:
        return self.value


_KIND_CODES: dict[Kind, int] = {kind: code for code, kind in enumerate(Kind)}
_KINDS_BY_CODE: tuple[Kind, ...] = tuple(Kind)


class Flag(enum.IntFlag):
    """Flags of a notice."""

    NONE = 0
    FOREIGN = 1  # another connection committed to the file before this commit (a direct writer)
    OVERFLOW = 2  # more records than a notice lists, or changes the writer does not describe


@dataclass(frozen=True)
class Record:
    """One record a commit changed: its kind, id, workflow id (None: not known) and new status."""

    kind: Kind
    id: str
    workflow_id: str | None
    status: str | None


@dataclass(frozen=True)
class FeedNotice:
    """One commit's notice; with OVERFLOW, `records` is empty and `count`/`workflow_ids` say what is known."""

    feed_id: int
    seq: int
    epoch: int
    flags: Flag
    records: tuple[Record, ...] = ()
    count: int = 0  # with OVERFLOW: how many operations the commit applied (0: not known)
    workflow_ids: tuple[str, ...] | None = None  # with OVERFLOW: the workflows touched, if known
    committed_at_us: int | None = None  # the writer's wall clock at COMMIT's return (None: not said)


# operation name -> (kind, id field, workflow id field, status field or a fixed status).
# The fields are the statements' parameter names (protocol/statements.py): the writer finds
# them by position once per run of a statement, then reads each operation's bound values.
_SPECS: dict[str, tuple[Kind, str, str | None, str | None]] = {
    CREATE_WORKFLOW: (Kind.WORKFLOW, "id", "id", None),
    UPDATE_WORKFLOW_STATUS: (Kind.WORKFLOW, "id", "id", "status"),
    CREATE_TASK: (Kind.TASK, "id", "workflow_id", None),
    UPDATE_TASK_STATUS: (Kind.TASK, "id", None, "status"),
    APPEND_TASK_LOG: (Kind.TASK_LOG, "id", None, None),
    AUDIT_EVENT: (Kind.AUDIT_EVENT, "id", "workflow_id", None),
    HELLO: (Kind.INSTANCE, "instance_id", None, None),
    GOODBYE: (Kind.INSTANCE, "instance_id", None, None),
}
_CREATED_STATUS = {CREATE_WORKFLOW: "pending", CREATE_TASK: "pending"}


@dataclass(frozen=True)
class RecordSpec:
    """Where one operation's record is in its statement's bound parameters."""

    kind: Kind
    id_index: int
    workflow_index: int | None
    status_index: int | None
    fixed_status: str | None

    def record(self, params: Sequence[Any]) -> tuple[Kind, str, str | None, str | None]:
        """The (kind, id, workflow_id, status) of one operation bound as `params`."""
        workflow_id = params[self.workflow_index] if self.workflow_index is not None else None
        status = params[self.status_index] if self.status_index is not None else self.fixed_status
        return (self.kind, params[self.id_index], workflow_id, status)


def record_spec(operation: str, names: Sequence[str]) -> RecordSpec | None:
    """How to read the record of `operation` from parameters named `names`; None if it changes none."""
    spec = _SPECS.get(operation)
    if spec is None:
        return None
    kind, id_field, workflow_field, status_field = spec
    return RecordSpec(
        kind,
        names.index(id_field),
        names.index(workflow_field) if workflow_field is not None else None,
        names.index(status_field) if status_field is not None else None,
        _CREATED_STATUS.get(operation),
    )


class Coalescer:
    """Gathers one commit's records, one per (kind, id), the last status winning; bounded."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._records: dict[tuple[Kind, str], list[Any]] = {}
        self.count = 0  # operations seen
        self.overflow = False
        self._workflow_ids: set[str] | None = set()

    def add(self, kind: Kind, record_id: str, workflow_id: str | None, status: str | None) -> None:
        """One operation's record."""
        self.count += 1
        if self.overflow:
            self._add_workflow(workflow_id)
            return
        key = (kind, record_id)
        known = self._records.get(key)
        if known is not None:
            if status is not None:
                known[3] = status
            if workflow_id is not None:
                known[2] = workflow_id
            return
        if len(self._records) >= self.max_records:
            self.overflow = True
            for record in self._records.values():
                self._add_workflow(record[2])
            self._records = {}
            self._add_workflow(workflow_id)
            return
        self._records[key] = [kind, record_id, workflow_id, status]

    def add_past_cap(self, count: int, workflow_ids: Iterable[str | None] | None) -> None:
        """Once overflowing: `count` more operations, of these workflows (None: not known)."""
        self.count += count
        if self._workflow_ids is None:
            return
        if workflow_ids is None:
            self._workflow_ids = None  # records whose workflow the notice cannot name
            return
        known = self._workflow_ids
        known.update(workflow_ids)  # type: ignore[arg-type]  # a None in it is checked just below
        if len(known) > self.max_records or None in known:
            self._workflow_ids = None

    def overflow_unknown(self) -> None:
        """The commit also changes records nobody listed (a prune, a sweep): an OVERFLOW, no workflows."""
        self.overflow = True
        self._records = {}
        self._workflow_ids = None

    def _add_workflow(self, workflow_id: str | None) -> None:
        if self._workflow_ids is None:
            return
        if workflow_id is None or len(self._workflow_ids) >= self.max_records:
            self._workflow_ids = None  # a record of an unknown workflow, or too many: say nothing
            return
        self._workflow_ids.add(workflow_id)

    def notice(
        self, feed_id: int, seq: int, epoch: int, flags: Flag = Flag.NONE, committed_at_us: int | None = None
    ) -> FeedNotice:
        """The notice of the commit numbered `seq`, committed at `committed_at_us`, with what was gathered."""
        if self.overflow:
            ids = None if self._workflow_ids is None else tuple(sorted(self._workflow_ids))
            return FeedNotice(
                feed_id, seq, epoch, flags | Flag.OVERFLOW, (), self.count, ids, committed_at_us
            )
        records = tuple(Record(*values) for values in self._records.values())
        return FeedNotice(feed_id, seq, epoch, flags, records, committed_at_us=committed_at_us)


def encode_notice(notice: FeedNotice) -> list[bytes]:
    """The two frames of a feed notice."""
    body: list[Any]
    if notice.flags & Flag.OVERFLOW:
        body = [notice.count, list(notice.workflow_ids) if notice.workflow_ids is not None else None]
    else:
        body = [[_KIND_CODES[r.kind], r.id, r.workflow_id, r.status] for r in notice.records]
    payload = [FEED_VERSION, notice.feed_id, notice.seq, notice.epoch, int(notice.flags), body]
    if notice.committed_at_us is not None:
        payload.append(notice.committed_at_us)
    return [FEED_TOPIC, msgpack.packb(payload)]


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RejectedMessage(f"a feed notice's {what} is a non-negative integer")
    return value


def _optional_text(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise RejectedMessage(f"a feed notice's {what} is text or nil")
    return value


def decode_notice(frames: Sequence[bytes]) -> FeedNotice:
    """Decode a feed notice's frames; raises RejectedMessage for anything else."""
    if len(frames) != 2 or frames[0] != FEED_TOPIC:
        raise RejectedMessage("not a feed notice")
    try:
        values = msgpack.unpackb(frames[1])
    except Exception as exc:
        raise RejectedMessage(f"feed notice is not msgpack: {exc}") from None
    if not isinstance(values, list) or len(values) not in (6, 7) or values[0] != FEED_VERSION:
        raise RejectedMessage("unknown feed notice version or shape")
    committed_at_us = _int(values[6], "commit time") if len(values) == 7 else None
    feed_id = _int(values[1], "feed id")
    seq = _int(values[2], "seq")
    epoch = _int(values[3], "epoch")
    flags = Flag(_int(values[4], "flags") & (Flag.FOREIGN | Flag.OVERFLOW))
    body = values[5]
    if flags & Flag.OVERFLOW:
        if not isinstance(body, list) or len(body) != 2:
            raise RejectedMessage("an overflowing feed notice's body is [count, workflow ids]")
        count, ids = body
        workflow_ids = None
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise RejectedMessage("a feed notice's workflow ids are text")
            workflow_ids = tuple(ids)
        return FeedNotice(feed_id, seq, epoch, flags, (), _int(count, "count"), workflow_ids, committed_at_us)
    if not isinstance(body, list) or len(body) > MAX_RECORDS:
        raise RejectedMessage("a feed notice's body is a list of at most MAX_RECORDS records")
    records = []
    for item in body:
        if not isinstance(item, list) or len(item) != 4:
            raise RejectedMessage("a feed record is [kind, id, workflow_id, status]")
        code, record_id, workflow_id, status = item
        if not isinstance(code, int) or not 0 <= code < len(_KINDS_BY_CODE) or not isinstance(record_id, str):
            raise RejectedMessage("a feed record has a known kind and a text id")
        records.append(
            Record(
                _KINDS_BY_CODE[code],
                record_id,
                _optional_text(workflow_id, "workflow id"),
                _optional_text(status, "status"),
            )
        )
    return FeedNotice(feed_id, seq, epoch, flags, tuple(records), committed_at_us=committed_at_us)


def coalesce(
    records: Iterable[tuple[Kind, str, str | None, str | None]], max_records: int = MAX_RECORDS
) -> Coalescer:
    """A Coalescer fed with `records` (a convenience for tests and small callers)."""
    gathered = Coalescer(max_records)
    for record in records:
        gathered.add(*record)
    return gathered
