"""The writer's cost per operation without sockets or other processes, for a profiler.

Builds messages exactly as a Client packs them (audit events, or the benchmark's workflow
mix), then applies them to a fresh database with the writer's own `apply_messages`, four
messages to a transaction. Seconds on a shared VM drift, so count instructions instead:

    valgrind --tool=callgrind --callgrind-out-file=apply.out \\
        .venv/bin/python tools/profile_writer.py --workload audit --operations 40000
    valgrind --tool=callgrind --callgrind-out-file=build.out \\
        .venv/bin/python tools/profile_writer.py --workload audit --operations 40000 --build-only

and divide the difference of the two totals by the operations (`callgrind_annotate
--inclusive=yes apply.out` splits it: sqlite3_step, msgpack's unpackb, gc_collect_main, ...).
`--cprofile FILE` writes a cProfile of the apply step instead.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "SEE_PERSISTENCE_RUNTIME_DIR" not in os.environ:  # the Client's socket directory, ours alone
    os.environ["SEE_PERSISTENCE_RUNTIME_DIR"] = _runtime_dir = tempfile.mkdtemp(prefix="see-profile-")
    atexit.register(shutil.rmtree, _runtime_dir, ignore_errors=True)

from benchlib.workloads import audit_stream, mix_stream

from see_persistence import Client
from see_persistence.protocol import codec
from see_persistence.writer import storage
from see_persistence.writer.batch import SequenceBook, apply_messages

OPERATIONS_PER_MESSAGE = 512
MESSAGES_PER_TRANSACTION = 4


def build_messages(db: Path, workload: str, operations: int) -> list[bytes]:
    """The messages one Client would send for `operations` calls of the workload."""
    client = Client(db)  # no writer runs: its operations are taken from it, never sent
    recorded: list[tuple[str, Any]] = []
    client._put = lambda name, payload: recorded.append((name, payload))  # type: ignore[method-assign]
    stream = audit_stream(client) if workload == "audit" else mix_stream(client)
    for _ in range(operations):
        next(stream)
    client.close(timeout=0)  # nothing to wait for: no writer ever takes its messages
    hello = {
        "pid": os.getpid(),
        "process_create_time": 1.0,
        "host": "profile",
        "at_us": time.time_ns() // 1000,
    }
    ops = [("hello", hello), *recorded]
    return [
        codec.encode_message(
            client.instance_id,
            start // OPERATIONS_PER_MESSAGE + 1,
            ops[start : start + OPERATIONS_PER_MESSAGE],
        )
        for start in range(0, len(ops), OPERATIONS_PER_MESSAGE)
    ]


def apply_all(db: Path, messages: list[bytes]) -> int:
    """Apply every message, MESSAGES_PER_TRANSACTION to a transaction; return operations applied."""
    conn = storage.open_write_connection(db)
    storage.upgrade_schema(conn, time.time_ns() // 1000)
    book = SequenceBook()
    applied = 0
    for start in range(0, len(messages), MESSAGES_PER_TRANSACTION):
        conn.execute("BEGIN IMMEDIATE")
        result = apply_messages(
            conn, messages[start : start + MESSAGES_PER_TRANSACTION], book, now_us=time.time_ns() // 1000
        )
        conn.execute("COMMIT")
        book.commit(result.committed_seq, result.rejected_total)
        if result.dead_letters:
            raise SystemExit(f"profile_writer: {result.dead_letters} dead letters: the workload is broken")
        applied += result.operations_applied
    conn.close()
    return applied


def main() -> int:
    """Build, then (unless --build-only) apply and report the seconds per operation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["audit", "mix"], default="audit")
    parser.add_argument("--operations", type=int, default=40_000)
    parser.add_argument("--build-only", action="store_true", help="stop after building the messages")
    parser.add_argument("--cprofile", type=Path, metavar="FILE", help="write a cProfile of the apply step")
    args = parser.parse_args()
    logging.getLogger("see_persistence").setLevel(logging.ERROR)  # its Client never meets a writer
    if args.operations < 1:
        parser.error("--operations must be at least 1")
    with tempfile.TemporaryDirectory(prefix="see-profile-") as tmp:
        db = Path(tmp) / "workflows.db"
        messages = build_messages(db, args.workload, args.operations)
        if args.build_only:
            return 0
        started = time.perf_counter()
        if args.cprofile:
            profiler = cProfile.Profile()
            applied = profiler.runcall(apply_all, db, messages)
            profiler.dump_stats(args.cprofile)
        else:
            applied = apply_all(db, messages)
        seconds = time.perf_counter() - started
    print(f"{args.workload}: {applied} operations applied, {seconds / applied * 1e6:.2f} µs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
