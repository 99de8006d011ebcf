"""The Client's bounded outbox: what callers handed over and the file does not yet hold.

No sockets and no clocks of its own: callers `put` operations (packed at once); the sending
thread `take`s them as numbered messages. A message then goes through two steps:

- a commit notice `confirm`s it: the writer says it committed it. The message no longer counts
  against the bound, but is kept, because a notice is only the writer's word (it may have
  committed into a file no name reaches any more, or not be our writer at all);
- the file at the database's path `verify`s it: its instance row says the sequence number is
  committed. Only then is the message forgotten and counted as confirmed, and only this is
  what flush() waits for.

Messages noticed but never verified go back to be sent again (`disown_noticed`). The bound
counts every operation pending or sent and not noticed; past it `put` drops and counts, or
waits if asked to.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..protocol import codec
from ..protocol.operations import HELLO

MAX_OPERATIONS_PER_SEND = 512
MAX_BYTES_PER_SEND = 4 * 1024 * 1024
# One message a take: the sending thread holds the GIL while it assembles, and a caller
# waits for the GIL; between messages the thread lets go of it.
MAX_OPERATIONS_PER_TAKE = MAX_OPERATIONS_PER_SEND


def _chunks(packed: list[bytes]) -> Iterator[list[bytes]]:
    """Cut packed operations into messages of at most MAX_OPERATIONS_PER_SEND and (but for a
    single operation larger than that) MAX_BYTES_PER_SEND."""
    for start in range(0, len(packed), MAX_OPERATIONS_PER_SEND):
        chunk = packed[start : start + MAX_OPERATIONS_PER_SEND]
        if sum(map(len, chunk)) <= MAX_BYTES_PER_SEND:  # the usual case, counted in C
            yield chunk
            continue
        current: list[bytes] = []
        size = 0
        for item in chunk:
            if current and size + len(item) > MAX_BYTES_PER_SEND:
                yield current
                current, size = [], 0
            current.append(item)
            size += len(item)
        yield current


@dataclass(frozen=True)
class OutgoingMessage:
    """A packed message, its sequence number, and how many caller operations it carries."""

    seq: int
    raw: bytes
    operations: int
    last_operation: int  # the running count of accepted operations this message ends at
    caller_operations: int  # operations the caller made (not the instance's hello or goodbye)


@dataclass(frozen=True)
class OutboxCounts:
    """A consistent snapshot of the outbox's counters."""

    accepted: int
    dropped: int
    confirmed: int
    buffered: int
    unconfirmed_messages: int  # sent, no notice yet
    noticed_messages: int  # noticed, not yet seen in the file
    next_seq: int
    confirmed_seq: int
    rejected: int  # operations the writer refused, as it last said (dead letters)
    internal: int  # of `accepted`: the instance's own operations (hello, goodbye)
    internal_held: int  # of `buffered`: the same, not yet confirmed
    caller_confirmed: int  # of `confirmed`: the caller's operations


class Outbox:
    """Thread-safe: any thread may put; one sending thread takes, confirms and resends."""

    def __init__(
        self, instance_id: str, limit: int, *, block_when_full: bool = False, token: str | None = None
    ) -> None:
        if limit < 1:
            raise ValueError("the outbox limit must be at least 1 operation")
        self.instance_id = instance_id
        self.token = token  # the instance's secret, in every message (None: version 1 messages)
        self._introduction: bytes | None = None  # a hello to open the next message (see restart)
        self._rejected_before = 0  # refused operations of the instances this outbox was before
        self.limit = limit
        self.block_when_full = block_when_full
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pack = codec.operation_packer()  # used under the lock: one packer, reused
        self._pending: list[bytes] = []  # packed operations not yet in a message
        self._unconfirmed: deque[OutgoingMessage] = deque()
        # Committed by the writer's word, not yet seen in the file: (message, when noticed).
        self._noticed: deque[tuple[OutgoingMessage, float]] = deque()
        self._held = 0  # operations pending or sent and not noticed: what the limit bounds
        self._next_seq = 1
        self._accepted = 0
        self._dropped = 0
        self._confirmed_ops = 0  # verified in the file
        self._confirmed_seq = 0
        self._noticed_ops = 0  # noticed or verified
        self._noticed_seq = 0
        self._confirmed_caller_ops = 0
        self._rejected = 0
        # Running numbers of the instance's own operations (hello, goodbye: two in a life),
        # so that counts shown to the caller are of the caller's operations only.
        self._internal: list[int] = []
        self._closed = False

    # -- callers ---------------------------------------------------------------------------------

    def put(self, name: str, payload: dict[str, Any]) -> bool:
        """Hold one operation; False (and counted) if the outbox is full and may not wait."""
        lock = self._lock
        lock.acquire()  # not `with`: every caller pays for each step of this method
        try:
            while self._held >= self.limit:
                if not self.block_when_full or self._closed:
                    self._dropped += 1
                    return False
                self._changed.wait(0.1)
            # Packed here, in one short C call, rather than in bulk by the sending thread: a
            # thread running Python for long holds the GIL, and every caller then waits for it.
            self._pending.append(self._pack((name, payload)))
            self._held += 1
            self._accepted += 1
            return True
        finally:
            lock.release()

    def put_internal(self, name: str, payload: dict[str, Any]) -> None:
        """Hold one of the instance's own operations (hello, goodbye): never dropped or
        counted as the caller's, and never waiting for room."""
        with self._lock:
            self._pending.append(self._pack((name, payload)))
            self._held += 1
            self._accepted += 1
            self._internal.append(self._accepted)

    def accepted(self) -> int:
        """How many operations were accepted so far (the target a flush waits for)."""
        with self._lock:
            return self._accepted

    def wait_confirmed(self, target: int, timeout: float) -> bool:
        """Wait until the file holds the first `target` accepted operations, at most `timeout` s."""
        return self._wait(lambda: self._confirmed_ops >= target, timeout)

    def wait_noticed(self, target: int, timeout: float) -> bool:
        """Wait until the writer said it committed the first `target` operations, at most `timeout` s."""
        return self._wait(lambda: self._noticed_ops >= target, timeout)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def close(self) -> None:
        """Wake every waiter; later puts that would wait drop instead."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def counts(self) -> OutboxCounts:
        """A snapshot of the counters."""
        with self._lock:
            return OutboxCounts(
                accepted=self._accepted,
                dropped=self._dropped,
                confirmed=self._confirmed_ops,
                buffered=self._held,
                unconfirmed_messages=len(self._unconfirmed),
                noticed_messages=len(self._noticed),
                next_seq=self._next_seq,
                confirmed_seq=self._confirmed_seq,
                rejected=self._rejected_before + self._rejected,
                internal=len(self._internal),
                internal_held=sum(1 for n in self._internal if n > self._noticed_ops),
                caller_confirmed=self._confirmed_caller_ops,
            )

    def rejected(self) -> int:
        """How many operations the writer refused, as it last said."""
        with self._lock:
            return self._rejected_before + self._rejected

    # -- the sending thread ----------------------------------------------------------------------

    def has_pending(self) -> bool:
        """True if operations wait to be packed into a message."""
        return bool(self._pending)

    def take(self) -> list[OutgoingMessage]:
        """Put waiting operations into numbered messages (kept until confirmed), oldest first.

        The lock is held only to cut the pending list: every caller's put waits for it.
        """
        with self._lock:
            pending = self._pending
            if not pending:
                return []
            if len(pending) <= MAX_OPERATIONS_PER_TAKE:
                taken, self._pending = pending, []
            else:
                taken = pending[:MAX_OPERATIONS_PER_TAKE]
                del pending[:MAX_OPERATIONS_PER_TAKE]
            first_seq = self._next_seq
            before = self._accepted - len(self._pending) - len(taken)
            internal = [n for n in self._internal if n > before] if self._internal else []
            introduction, self._introduction = self._introduction, None
        messages: list[OutgoingMessage] = []
        for chunk in _chunks(taken):
            start, before = before, before + len(chunk)
            seq = first_seq + len(messages)
            # After a restart the first message opens with the new instance's hello, which is
            # no operation of the caller's nor counted against the bound.
            packed = [introduction, *chunk] if introduction is not None and not messages else chunk
            raw = codec.assemble_message(self.instance_id, seq, packed, self.token)
            own = sum(1 for n in internal if start < n <= before) if internal else 0
            messages.append(OutgoingMessage(seq, raw, len(chunk), before, len(chunk) - own))
        with self._lock:
            self._next_seq = first_seq + len(messages)
            self._unconfirmed.extend(messages)
        return messages

    def confirm(self, committed_seq: int, rejected: int | None, now: float) -> int:
        """The writer's word (a commit notice): every message up to `committed_seq` is committed.

        They stop counting against the bound and wait for the file to `verify` them. `rejected`
        is the writer's running total of this instance's refused operations (None: not said);
        `now` is the sending thread's monotonic clock. Returns the operations noticed.
        """
        noticed = 0
        with self._lock:
            if rejected is not None and rejected > self._rejected:
                self._rejected = rejected
            if committed_seq <= self._noticed_seq:
                return 0
            while self._unconfirmed and self._unconfirmed[0].seq <= committed_seq:
                message = self._unconfirmed.popleft()
                self._held -= message.operations
                self._noticed.append((message, now))
                self._noticed_ops = message.last_operation
                noticed += message.operations
            self._noticed_seq = committed_seq
            self._changed.notify_all()
        return noticed

    def verify(self, committed_seq: int, rejected: int | None = None) -> int:
        """What the file says: every message up to `committed_seq` is committed; forget them.

        Returns the operations this confirmed.
        """
        confirmed = 0
        with self._lock:
            if rejected is not None and rejected > self._rejected:
                self._rejected = rejected
            if committed_seq <= self._confirmed_seq:
                return 0
            while self._noticed and self._noticed[0][0].seq <= committed_seq:
                message = self._noticed.popleft()[0]
                self._confirmed(message)
                confirmed += message.operations
            while self._unconfirmed and self._unconfirmed[0].seq <= committed_seq:
                message = self._unconfirmed.popleft()  # its notice was missed
                self._held -= message.operations
                self._confirmed(message)
                confirmed += message.operations
            self._confirmed_seq = committed_seq
            if self._confirmed_ops > self._noticed_ops:
                self._noticed_ops, self._noticed_seq = self._confirmed_ops, committed_seq
            self._changed.notify_all()
        return confirmed

    def _confirmed(self, message: OutgoingMessage) -> None:
        self._confirmed_ops = message.last_operation
        self._confirmed_caller_ops += message.caller_operations

    def oldest_unverified_since(self) -> float | None:
        """When the oldest message noticed but not yet verified was noticed (None: none waits)."""
        with self._lock:
            return self._noticed[0][1] if self._noticed else None

    def disown_noticed(self) -> int:
        """The file never agreed with the notices: take those messages back to send them again.

        Returns how many messages go back.
        """
        with self._lock:
            messages = [message for message, _ in self._noticed]
            self._noticed.clear()
            for message in reversed(messages):
                self._unconfirmed.appendleft(message)
                self._held += message.operations
            self._noticed_ops, self._noticed_seq = self._confirmed_ops, self._confirmed_seq
            self._changed.notify_all()
            return len(messages)

    def restart(self, instance_id: str, token: str, hello: dict[str, Any]) -> int:
        """Become a new instance, holding everything the file does not hold yet.

        For when the database no longer knows the old instance, or holds less of it than it
        once confirmed (a restore put an older file in its place): its sequence numbers cannot
        continue there. Every operation not yet verified in the file is packed again, in its
        order, to go out as the new instance's, after `hello` (the old instance's own hello,
        if it is among them, is replaced by the new one). Returns how many operations are
        held again. Called by the sending thread only.
        """
        with self._lock:
            held = [message for message, _ in self._noticed] + list(self._unconfirmed)
            operations: list[bytes] = []
            new_hello = self._pack((HELLO, hello))
            for message in held:
                for name, payload in msgpack.unpackb(message.raw, raw=False)[-1]:
                    operations.append(new_hello if name == HELLO else self._pack((name, payload)))
            self._pending = operations + self._pending
            self._unconfirmed.clear()
            self._noticed.clear()
            self._held = len(self._pending)
            self.instance_id, self.token = instance_id, token
            self._next_seq = 1
            self._confirmed_seq = self._noticed_seq = 0
            self._noticed_ops = self._confirmed_ops
            self._introduction = None if operations[:1] == [new_hello] else new_hello
            self._rejected_before += self._rejected
            self._rejected = 0
            self._changed.notify_all()
            return len(operations)

    def unconfirmed(self) -> list[OutgoingMessage]:
        """Every message sent and not yet confirmed, in sequence order (for a resend)."""
        with self._lock:
            return list(self._unconfirmed)
