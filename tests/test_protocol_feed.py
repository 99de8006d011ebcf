"""The change feed's notices, with plain function calls (protocol/feed.py).

The writer publishing them: test_commit_seq.py.
"""

from __future__ import annotations

import msgpack
import pytest

from see_persistence.protocol import codec, feed, statements
from see_persistence.protocol.errors import RejectedMessage
from see_persistence.protocol.feed import Coalescer, FeedNotice, Flag, Kind, Record

pytestmark = pytest.mark.unit


def test_no_existing_subscription_is_a_prefix_of_the_feed_topic() -> None:
    # PUB filters by prefix: a client subscribed to b"h" or b"c<id>" never gets a feed frame.
    for topic in (codec.NOTICE_HEARTBEAT, codec.NOTICE_COMMIT_PREFIX):
        assert not feed.FEED_TOPIC.startswith(topic)


def test_a_notice_round_trips() -> None:
    notice = FeedNotice(
        7,
        42,
        3,
        Flag.FOREIGN,
        (Record(Kind.WORKFLOW, "w1", "w1", "running"), Record(Kind.TASK_LOG, "t1", None, None)),
    )
    assert feed.decode_notice(feed.encode_notice(notice)) == notice


def test_an_overflowing_notice_round_trips() -> None:
    notice = FeedNotice(7, 43, 3, Flag.OVERFLOW, (), 500, ("w1", "w2"))
    assert feed.decode_notice(feed.encode_notice(notice)) == notice


def test_the_commit_instant_round_trips_and_a_notice_without_it_still_reads() -> None:
    records = (Record(Kind.TASK, "t1", "w1", "completed"),)
    at_us = 1_796_000_000_123_456
    for notice in (
        FeedNotice(7, 44, 3, Flag.NONE, records, committed_at_us=at_us),
        FeedNotice(7, 45, 3, Flag.OVERFLOW, (), 9, None, at_us),
    ):
        assert feed.decode_notice(feed.encode_notice(notice)) == notice
    # Six items, as a writer that does not say when it committed sends them.
    six = [feed.FEED_VERSION, 7, 46, 3, 0, [[feed._KIND_CODES[Kind.TASK], "t1", "w1", "completed"]]]
    read = feed.decode_notice([feed.FEED_TOPIC, msgpack.packb(six)])
    assert read.committed_at_us is None and read.records == records
    gathered = feed.coalesce([(Kind.TASK, "t1", "w1", "completed")])
    assert gathered.notice(7, 47, 3, committed_at_us=at_us).committed_at_us == at_us


@pytest.mark.parametrize(
    "payload",
    [
        [2, 1, 1, 1, 0, []],
        [1, -1, 1, 1, 0, []],
        [1, 1, 1, 1, 0, [[99, "x", None, None]]],
        [1, 1, 1, 1, 0, [[0, 5, None, None]]],
        [1, 1, 1, 1, 2, [5]],
        [1, 1, 1, 1, 0, [], -5],
        [1, 1, 1, 1, 0, [], "yesterday"],
        [1, 1, 1, 1, 0, [], 1, 2],
        [1, 1, 1, 1, 0, [[0, "x", None, None]] * (feed.MAX_RECORDS + 1)],
        "nonsense",
    ],
)
def test_bad_notices_are_rejected(payload: object) -> None:
    with pytest.raises(RejectedMessage):
        feed.decode_notice([feed.FEED_TOPIC, msgpack.packb(payload)])


def test_other_topics_are_not_feed_notices() -> None:
    with pytest.raises(RejectedMessage):
        feed.decode_notice(codec.encode_heartbeat(1))


def test_a_record_changed_twice_in_a_commit_is_one_change_with_its_last_status() -> None:
    gathered = feed.coalesce(
        [
            (Kind.WORKFLOW, "w1", "w1", "pending"),
            (Kind.TASK, "t1", "w1", "pending"),
            (Kind.WORKFLOW, "w1", "w1", "running"),
            (Kind.TASK, "t1", None, "completed"),
        ]
    )
    notice = gathered.notice(1, 2, 3)
    assert notice.records == (
        Record(Kind.WORKFLOW, "w1", "w1", "running"),
        Record(Kind.TASK, "t1", "w1", "completed"),
    )
    assert notice.flags == Flag.NONE


def test_past_the_cap_only_the_workflows_and_a_count() -> None:
    gathered = feed.coalesce([(Kind.WORKFLOW, f"w{i}", f"w{i % 3}", None) for i in range(10)], max_records=4)
    notice = gathered.notice(1, 2, 3)
    assert notice.flags == Flag.OVERFLOW
    assert notice.records == () and notice.count == 10
    assert notice.workflow_ids == ("w0", "w1", "w2")


def test_past_the_cap_with_too_many_or_unknown_workflows_just_a_count() -> None:
    many = feed.coalesce([(Kind.WORKFLOW, f"w{i}", f"w{i}", None) for i in range(10)], max_records=4)
    assert many.notice(1, 2, 3).workflow_ids is None
    unknown = feed.coalesce([(Kind.TASK_LOG, f"t{i}", None, None) for i in range(10)], max_records=4)
    assert unknown.notice(1, 2, 3).workflow_ids is None


def test_a_commit_not_described_is_an_overflow() -> None:
    gathered = Coalescer()
    gathered.overflow_unknown()
    notice = gathered.notice(1, 2, 3)
    assert notice.flags == Flag.OVERFLOW and notice.workflow_ids is None


def test_every_statement_that_changes_a_record_has_a_spec() -> None:
    for (operation, _status), statement in statements.COMPILED.items():
        spec = feed.record_spec(operation, statement.names)
        assert spec is not None, operation
