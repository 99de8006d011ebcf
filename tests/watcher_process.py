"""A GUI-like watcher process for the process-level tests: Reader.watch() until stdin closes.

Prints one JSON line on stdout per item, {"item": "change", "kind", "id", "status", "seq"} or
{"item": "resync", "cause", "seq"}; {"item": "heard"} once its first notice came (the
subscription reached the writer); and {"item": "closed", "stats": {...}} at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading

from see_persistence import Change, Reader

GET_TIMEOUT_S = 0.1  # how often the loop looks whether stdin closed


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    watcher = Reader(args.db).watch()
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    heard = False
    while not done.is_set():
        item = watcher.get(timeout=GET_TIMEOUT_S)
        if isinstance(item, Change):
            emit(item="change", kind=str(item.kind), id=item.id, status=item.status, seq=item.seq)
        elif item is not None:
            emit(item="resync", cause=str(item.cause), seq=item.seq)
        # After the item it came with: the first line is always the watcher's Resync(STARTED).
        if not heard and watcher.stats.notices:
            heard = True
            emit(item="heard")
    watcher.close()
    emit(item="closed", stats=dataclasses.asdict(watcher.stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
