"""A gap notice waits in the client's queue while the file moves on: the client must not take
it for a database that lost what it confirmed (and re-register, resending committed writes)."""

from __future__ import annotations

import zmq
from conftest import wait_until

from see_persistence import Client, locations
from see_persistence.protocol import codec


def test_a_gap_notice_older_than_what_the_file_holds_does_not_make_the_client_register_again(db, writers):
    writer = writers(db)
    writer.wait_holding_lease()
    client = Client(db)
    try:
        for round_ in range(3):  # flushed one by one: several messages, so a seq to go back to
            client.create_workflow(f"w{round_}")
            assert client.flush(timeout=30) is True
        instance_id, epoch = client.instance_id, client.stats.writer_epoch
        confirmed_seq = client._outbox.counts().confirmed_seq  # what the file said
        assert confirmed_seq >= 2
        writer.stop()
        # In the wild: a writer sends a gap notice, the client resends, the writer commits,
        # and the client reads that from the file before it reaches the older notice in its
        # queue. Here the notice comes late from a socket at the writer's endpoint, followed by
        # a heartbeat of a next epoch: once the client knows that epoch, it has read the notice.
        endpoints = locations.endpoints_for(db)
        context = zmq.Context()
        pub = context.socket(zmq.PUB)
        pub.bind(endpoints.pub)
        try:

            def notice_read() -> bool:
                late_gap = codec.encode_commit_notice(instance_id, epoch, confirmed_seq - 1, gap=True)
                pub.send_multipart(late_gap)
                pub.send_multipart(codec.encode_heartbeat(epoch + 1))
                return client.stats.writer_epoch == epoch + 1

            wait_until(notice_read, 20, "the client to read the late gap notice")
        finally:
            pub.close(linger=0)
            context.term()
        assert client.instance_id == instance_id
        assert client.stats.registrations == 0
        writers(db).wait_holding_lease()
        client.create_workflow("after")
        assert client.flush(timeout=30) is True
        assert client.stats.rejected == 0
    finally:
        client.close(timeout=10)
