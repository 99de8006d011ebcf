"""The ids a process generates: valid UUIDv7 text, strictly increasing, unique across threads and forks."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

from see_persistence.idgen import Uuid7Generator, new_id
from see_persistence.protocol.ids import format_uuid7


def _fields(text: str) -> tuple[int, int, int]:
    value = uuid.UUID(text).int
    return value >> 80, (value >> 64) & 0xFFF, value & ((1 << 62) - 1)


def test_ids_are_version_7_with_the_clock_in_their_first_48_bits():
    generator = Uuid7Generator(clock_ns=lambda: 1_764_000_000_123_456_789)
    text = generator.new_id()
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    ms, counter, rand = _fields(text)
    assert ms == 1_764_000_000_123
    assert counter < 1024  # each millisecond starts low, leaving room to count up
    assert text == format_uuid7(ms, counter, rand)  # the protocol's slow, plain layout


def test_ids_strictly_increase_within_a_millisecond_and_borrow_the_next_one_past_4096():
    generator = Uuid7Generator(clock_ns=lambda: 1_000_000_000)  # a clock that never moves
    ids = [generator.new_id() for _ in range(9000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    first_ms = _fields(ids[0])[0]
    assert _fields(ids[-1])[0] > first_ms  # the counter ran out and took the next millisecond
    for text in ids:
        assert uuid.UUID(text).version == 7


def test_a_clock_that_steps_back_never_makes_an_id_go_back():
    times = iter([5_000_000_000, 4_000_000_000, 4_000_000_000, 6_000_000_000])
    generator = Uuid7Generator(clock_ns=lambda: next(times))
    ids = [generator.new_id() for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_ids_from_several_threads_are_unique_and_each_threads_own_increase():
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(20_000):
            out.append(new_id())

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [text for out in per_thread for text in out]
    assert len(set(everything)) == len(everything) == 80_000
    for out in per_thread:
        assert out == sorted(out)


def _ids_after_a_fork(make_id: Callable[[], str], count: int = 100) -> tuple[list[str], list[str]]:
    """`count` ids made by a forked child and `count` made by this process after the fork."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its ids and leave without running the test runner's exit
        os.close(read_end)
        os.write(write_end, "\n".join(make_id() for _ in range(count)).encode())
        os._exit(0)
    os.close(write_end)
    parent_ids = [make_id() for _ in range(count)]
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode().split("\n"), parent_ids


def test_a_forked_child_does_not_repeat_its_parents_ids():
    new_id()  # the generator's state before the fork is what a careless child would repeat
    child_ids, parent_ids = _ids_after_a_fork(new_id)
    assert len(child_ids) == 100
    assert not set(child_ids) & set(parent_ids)


def test_a_forked_child_counting_in_the_same_millisecond_does_not_repeat_its_parent():
    # A frozen clock: parent and child both go on counting from the same counter in the same
    # millisecond, so only the child's own random bits can keep their ids apart.
    generator = Uuid7Generator(clock_ns=lambda: 1_764_000_000_123_456_789)
    before_fork = generator.new_id()
    child_ids, parent_ids = _ids_after_a_fork(generator.new_id)
    assert len(child_ids) == 100
    assert not set(child_ids) & set(parent_ids)
    assert min(child_ids) > before_fork  # the child's ids still increase past what it inherited


def test_each_millisecond_draws_new_random_bits():
    clock = iter(range(1_000_000_000, 1_000_000_000 + 50 * 1_000_000, 1_000_000))
    generator = Uuid7Generator(clock_ns=lambda: next(clock))
    randoms = {_fields(generator.new_id())[2] for _ in range(50)}
    assert len(randoms) == 50
