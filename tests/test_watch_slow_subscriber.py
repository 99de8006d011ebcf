"""A watcher process that stops reading (SIGSTOP) does not hold the writer back.

The writer's PUB socket never waits for a subscriber: while the watcher's process is stopped,
every operation a client sends is still committed and flushed. When the watcher resumes, it
either delivers every change it missed, in order and once, or says it cannot with a Resync.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from see_persistence import Reader

# Enough commits to fill the subscriber's queues past ZeroMQ's high-water marks (1,000 on each
# side) and most of the kernel's socket buffers; each is its own commit because each is flushed.
COMMITS = 2500
WAIT_S = 120.0

WATCHER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from see_persistence import Change, Reader
    with Reader(sys.argv[1]).watch(kinds=["audit_event"], max_pending=256) as watcher:
        first = watcher.get(timeout=30)
        deadline = time.monotonic() + 30
        while watcher.stats.notices == 0 and time.monotonic() < deadline:
            watcher.get(timeout=0.1)
        print(json.dumps({"ready": watcher.stats.notices > 0}), flush=True)
        for item in watcher:
            if isinstance(item, Change):
                print(json.dumps({"change": item.id, "seq": item.seq}), flush=True)
            else:
                print(json.dumps({"resync": str(item.cause)}), flush=True)
    """
)

FLOOD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from see_persistence import Client
    flushed = 0
    with Client(sys.argv[1]) as client:
        for i in range(int(sys.argv[2])):
            client.log_audit_event("tick", f"tick {i}")
            flushed += client.flush(timeout=30.0)
    print(json.dumps({"flushed": flushed}), flush=True)
    """
)


class LineReader:
    """The JSON lines a child prints, read on a thread so that waiting has a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()

    def _read(self, stdout: object) -> None:
        for line in stdout:  # type: ignore[attr-defined]
            self.lines.put(json.loads(line))

    def next(self, timeout: float = WAIT_S) -> dict[str, object]:
        return self.lines.get(timeout=timeout)


@pytest.fixture
def watcher_process(db: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", WATCHER_SCRIPT, str(db)], stdout=subprocess.PIPE, text=True
    )
    yield process
    os.kill(process.pid, signal.SIGCONT)
    process.kill()
    process.wait(timeout=20)


@pytest.mark.slow
def test_a_stopped_watcher_does_not_stop_the_writer(db: Path, writers, watcher_process) -> None:
    writers(db).wait_holding_lease()
    output = LineReader(watcher_process)
    assert output.next() == {"ready": True}

    os.kill(watcher_process.pid, signal.SIGSTOP)
    flood = subprocess.run(
        [sys.executable, "-c", FLOOD_SCRIPT, str(db), str(COMMITS)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert flood.returncode == 0, flood.stderr
    assert json.loads(flood.stdout) == {"flushed": COMMITS}, "every flush returned True"
    reader = Reader(db)
    assert reader.query("SELECT count(*) FROM audit_events WHERE event_type = 'tick'")[0][0] == COMMITS

    os.kill(watcher_process.pid, signal.SIGCONT)
    ids = {row[0] for row in reader.query("SELECT id FROM audit_events WHERE event_type = 'tick'")}
    seen: list[str] = []
    seqs: list[int] = []
    resyncs: list[str] = []

    def caught_up() -> bool:
        while True:
            try:
                line = output.next(timeout=0.2)
            except queue.Empty:
                return bool(resyncs) or ids <= set(seen)
            if "resync" in line:
                resyncs.append(str(line["resync"]))
            else:
                seen.append(str(line["change"]))
                seqs.append(int(line["seq"]))  # type: ignore[call-overload]

    wait_until(caught_up, WAIT_S, "the resumed watcher to catch up or resync")
    assert seqs == sorted(seqs), "what it delivered came in commit order"
    assert len(seen) == len(set(seen)), "each change at most once"
    assert set(resyncs) <= {"missed", "overflow"}, resyncs
