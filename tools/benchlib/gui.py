"""The GUI role (`bench.py --role gui`): one load-generating process running the phases it is sent."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import BY_NAME
from .settings import CONTROL_DUMPS, CONTROL_EVERY, CONTROL_SUFFIX, READY_TIMEOUT_S
from .workloads import audit_stream, mix_stream


@dataclass
class _Mark:
    """Where a phase stood at one instant (inside a GUI process)."""

    at: float
    done: int
    committed: int
    cpu: float
    messages: int


def _mark(gui: Any, done: int) -> _Mark:
    return _Mark(time.monotonic(), done, gui.committed(done), time.process_time(), gui.messages(done))


def run_phase(gui: Any, stream: Iterator[int], cmd: dict[str, Any]) -> dict[str, Any]:
    """Run one flood or paced phase between the absolute (monotonic) times the parent gave."""
    start, warm, stop = float(cmd["start"]), float(cmd["warm"]), float(cmd["stop"])
    cap, rate = int(cmd.get("cap", 0)), float(cmd.get("rate", 0.0))
    end_at_cap = bool(cmd.get("end_at_cap", False))
    lat = array("q")
    append = lat.append
    control = array("q")
    mono = time.monotonic
    pc = time.perf_counter_ns
    dumps = json.dumps

    def time_trivial_call(n: int) -> None:
        t0 = pc()
        for _ in range(CONTROL_DUMPS):
            dumps({"n": n})
        control.append(pc() - t0)

    delay = start - mono()
    if delay > 0:
        time.sleep(delay)
    begin = _mark(gui, 0)
    warm_mark: _Mark | None = begin if warm <= start else None
    done = 0
    dropped_before = gui.dropped()
    if cmd["mode"] == "flood":
        while True:
            append(next(stream))
            done += 1
            if done % CONTROL_EVERY == 0 and warm_mark is not None:
                time_trivial_call(done)
            now = mono()
            if now >= stop:
                break
            if done & 63 == 0:
                if warm_mark is None and now >= warm:
                    warm_mark = _mark(gui, done)
                if cap and gui.backlog() > cap:  # an untimed pause, so the outbox never drops
                    if end_at_cap:
                        break
                    while gui.backlog() > cap // 2 and mono() < stop:
                        if warm_mark is None and mono() >= warm:
                            warm_mark = _mark(gui, done)  # the window starts on time, paused or not
                        time.sleep(0.001)
                    if mono() >= stop:
                        break  # paused to the end: no call after the window
    else:
        interval = 1.0 / rate
        wakeups = 0
        while True:
            now = mono()
            if now >= stop:
                break
            if warm_mark is None and now >= warm:
                warm_mark = _mark(gui, done)
            due = min(int((now - start) * rate) + 1, done + 1000)
            wakeups += 1
            if wakeups % CONTROL_EVERY == 0 and warm_mark is not None:
                # The trivial call first after this wakeup, on caches as cold as a write call
                # meets there; the write calls after it (warmer than usual) go untimed.
                time_trivial_call(done)
                while done < due:
                    next(stream)
                    done += 1
            else:
                while done < due:
                    append(next(stream))
                    done += 1
            wait = start + done * interval - mono()
            if wait > 0:
                time.sleep(wait)
    end = _mark(gui, done)
    if warm_mark is None:
        warm_mark = begin
    Path(cmd["samples"]).write_bytes(lat.tobytes())
    if control:
        Path(cmd["samples"] + CONTROL_SUFFIX).write_bytes(control.tobytes())
    return {
        "ops": done,
        "warm_index": warm_mark.done,  # every call before the warm mark is timed, so its index too
        "window_s": end.at - warm_mark.at,
        "window_ops": end.done - warm_mark.done,
        "window_committed": end.committed - warm_mark.committed,
        "cpu_s": end.cpu - warm_mark.cpu,
        "window_messages": end.messages - warm_mark.messages,
        "dropped": gui.dropped() - dropped_before,
        "backlog": gui.backlog(),
    }


def gui_main(args: argparse.Namespace) -> int:
    """A load-generating GUI process: JSON commands on stdin, one JSON result per line on stdout."""
    # A URL stays text: Path would fold its "//" (postgresql://... names a server, not a file).
    db: Path | str = args.db if "://" in args.db else Path(args.db)
    gui: Any = BY_NAME[args.system].make_gui(db)
    if not gui.flush(READY_TIMEOUT_S):  # ours: the writer confirmed the hello; naive: at once
        print(json.dumps({"error": "the writer did not confirm this client's hello"}), flush=True)
        return 1
    stream = audit_stream(gui) if args.workload == "audit" else mix_stream(gui)
    print(json.dumps({"ready": True, "pid": os.getpid(), "instance_id": gui.instance_id}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "phase":
            print(json.dumps(run_phase(gui, stream, cmd)), flush=True)
        elif cmd["cmd"] == "flush":
            t0 = time.monotonic()
            ok = gui.flush(float(cmd["timeout"]))
            print(json.dumps({"flushed": ok, "seconds": time.monotonic() - t0}), flush=True)
        elif cmd["cmd"] == "finish":
            ok = gui.close(float(cmd["timeout"]))
            print(json.dumps({"closed": ok, "dropped": gui.dropped()}), flush=True)
            return 0
    gui.close(1.0)  # the parent went away
    return 0
