"""The change feed and flush under asyncio.run: `async for`, aget(), aflush(), cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from see_persistence import Change, Client, Reader, Resync, ResyncCause, Watcher


def _covers(item: Change | Resync, workflow_id: str) -> bool:
    """Whether `item` tells of that workflow: its Change, or a Resync (re-read: it is there)."""
    if isinstance(item, Resync):
        return item.cause != ResyncCause.STARTED
    return item.id == workflow_id


async def _until_covered(watcher: Watcher, workflow_id: str) -> Change | Resync:
    while True:
        item = await watcher.aget(timeout=20)
        assert item is not None, "nothing told of the workflow within 20 s"
        if _covers(item, workflow_id):
            return item


def test_async_for_delivers_what_a_client_commits_and_ends_at_close(db, writers):
    writers(db).wait_holding_lease()

    async def main() -> None:
        reader = Reader(db)
        with Client(db) as client, reader.watch() as watcher:
            first = await watcher.aget(timeout=20)
            assert isinstance(first, Resync) and first.cause == ResyncCause.STARTED
            wid = client.create_workflow("from asyncio")
            assert await client.aflush(timeout=20) is True
            told = False
            async for item in watcher:
                if not told and _covers(item, wid):
                    told = True
                    # close() from another thread ends the loop, as it ends a waiting get()
                    threading.Timer(0.1, watcher.close).start()
            assert told and reader.get_workflow(wid) is not None

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_a_cancelled_aget_leaves_the_watcher_working(db, writers):
    writers(db).wait_holding_lease()

    async def main() -> None:
        with Reader(db).watch() as watcher:
            assert isinstance(await watcher.aget(timeout=20), Resync)  # STARTED
            waiting = asyncio.ensure_future(watcher.aget())
            await asyncio.sleep(0.05)  # it waits on the watcher's descriptor meanwhile
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            with Client(db) as client:
                wid = client.create_workflow("after the cancel")
                assert await client.aflush(timeout=20)
            await _until_covered(watcher, wid)

    asyncio.run(asyncio.wait_for(main(), timeout=60))
