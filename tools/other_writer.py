"""Another program writing the database directly: one workflow every 50 ms through plain sqlite3.

    python tools/other_writer.py --db PATH --log FILE [--interval 0.05] [--busy-timeout 30]
                                [--name-prefix other-program-] [--seconds N | --stop-at T] [--start-at T]

It stands for the app's Rust core or a user's script writing the same file beside the writer
(docs/DESIGN.md, "Other writers of the same file"): `sqlite3.connect(db, timeout=30)` in
autocommit, no PRAGMA of its own, and one INSERT into workflow_executions per interval with the
seed's column values (a uuid4 id, lowercase status `pending`, RFC 3339 UTC timestamps with
microseconds and `+00:00`, metadata `{}`, no instance). It imports nothing of see_persistence:
it knows only the file.

Every write goes to the log as one tab-separated line, flushed at once so that a parent can
verify the rows even if this process is killed:

    ok      <id> <name> <monotonic s at the call> <wait ns>
    error   <id> <name> <monotonic s at the call> <wait ns> <SQLite error name> <message>

The wait is the time from the call to its return: what the program's own caller would feel.
The schedule is fixed (start + k * interval); a write that returns late is followed by the next
one at once, but missed slots are skipped rather than written in a burst. It stops at --stop-at
(CLOCK_MONOTONIC, shared by every process of the machine) or after --seconds, or on SIGTERM or
SIGINT once the write in progress returns, then prints a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

DEFAULT_INTERVAL_S = 0.05
DEFAULT_BUSY_TIMEOUT_S = 30.0
DEFAULT_PREFIX = "other-program-"
INSERT = (
    "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata, last_updated)"
    " VALUES (?, ?, 'pending', ?, '{}', ?)"
)
# 'pending' rather than a finished status: retention (prune) never deletes a pending workflow,
# so a soak that prunes verified records keeps every row of this program until it is checked.


@dataclass
class Write:
    """One write of the other program, as its log tells it."""

    ok: bool
    id: str
    name: str
    at: float  # CLOCK_MONOTONIC seconds at the call
    wait_ns: int
    error: str = ""  # SQLite's error name and message, for a failed write


def _now_text() -> str:
    """Now as the seed stores it: RFC 3339 in UTC with microseconds and +00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def read_log(path: Path) -> list[Write]:
    """The writes a log holds, in order (a line cut short by a kill is left out)."""
    writes: list[Write] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return writes
    for line in text.splitlines():
        fields = line.split("\t")
        try:
            if fields[0] == "ok" and len(fields) == 5:
                writes.append(Write(True, fields[1], fields[2], float(fields[3]), int(fields[4])))
            elif fields[0] == "error" and len(fields) >= 7:
                error = f"{fields[5]}: {' '.join(fields[6:])}"
                writes.append(Write(False, fields[1], fields[2], float(fields[3]), int(fields[4]), error))
        except ValueError:
            continue
    return writes


def quantile(ordered: Sequence[int], fraction: float) -> int | None:
    """Nearest-rank quantile of sorted values (None when there are none)."""
    if not ordered:
        return None
    return int(ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))])


def wait_ms(waits_ns: Iterable[int]) -> dict[str, float | None]:
    """p50 / p99 / p99.9 / max of some waits in milliseconds (nearest rank; None when there are none)."""
    ordered = sorted(waits_ns)

    def ms(fraction: float) -> float | None:
        value = quantile(ordered, fraction)
        return None if value is None else round(value / 1e6, 3)

    return {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": ms(1.0)}


def summarize(writes: Sequence[Write]) -> dict[str, object]:
    """Counts and wait percentiles (milliseconds) of some writes."""
    errors = [w for w in writes if not w.ok]
    return {
        "writes": len(writes),
        "ok": len(writes) - len(errors),
        "errors": len(errors),
        "first_errors": [e.error[:200] for e in errors[:5]],
        "wait_ms": wait_ms(w.wait_ns for w in writes),
    }


class _Stop:
    """Set by SIGTERM/SIGINT: the loop ends after the write in progress."""

    requested = False

    @classmethod
    def handler(cls, signum: int, frame: FrameType | None) -> None:
        """Note the request; never interrupt a write."""
        cls.requested = True


def run(
    db: Path,
    log_path: Path,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    prefix: str = DEFAULT_PREFIX,
    start_at: float | None = None,
    stop_at: float | None = None,
) -> list[Write]:
    """Write one workflow per interval until stop_at or a signal; every write is logged as it returns."""
    mono, pc = time.monotonic, time.perf_counter_ns
    conn = sqlite3.connect(str(db), timeout=busy_timeout_s, isolation_level=None)
    writes: list[Write] = []
    next_at = start_at if start_at is not None else mono()
    n = 0
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        try:
            while not _Stop.requested:
                now = mono()
                if stop_at is not None and now >= stop_at:
                    break
                if next_at > now:
                    time.sleep(min(next_at - now, 0.05))  # short naps: a signal is seen soon
                    continue
                record_id, name, at_text = str(uuid.uuid4()), f"{prefix}{n}", _now_text()
                n += 1
                at = mono()
                t0 = pc()
                try:
                    conn.execute(INSERT, (record_id, name, at_text, at_text))
                    wait = pc() - t0
                    write = Write(True, record_id, name, at, wait)
                    log.write(f"ok\t{record_id}\t{name}\t{at:.6f}\t{wait}\n")
                except sqlite3.Error as exc:
                    wait = pc() - t0
                    code = getattr(exc, "sqlite_errorname", type(exc).__name__)
                    message = str(exc).replace("\t", " ").replace("\n", " ")
                    write = Write(False, record_id, name, at, wait, f"{code}: {message}")
                    log.write(f"error\t{record_id}\t{name}\t{at:.6f}\t{wait}\t{code}\t{message}\n")
                writes.append(write)
                next_at += interval_s
                if next_at < mono():
                    next_at = mono()  # late: the next write now, and no burst to catch up
        finally:
            conn.close()
    return writes


def main(argv: Sequence[str] | None = None) -> int:
    """Run until told to stop; print a JSON summary; exit 1 if any write failed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", required=True, type=Path, help="the database (it must exist)")
    parser.add_argument("--log", required=True, type=Path, help="one line per write is appended here")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between writes")
    parser.add_argument(
        "--busy-timeout", type=float, default=DEFAULT_BUSY_TIMEOUT_S, help="sqlite3.connect(timeout=...)"
    )
    parser.add_argument("--name-prefix", default=DEFAULT_PREFIX, help="workflow_name is this plus a counter")
    parser.add_argument("--start-at", type=float, help="CLOCK_MONOTONIC time of the first write")
    parser.add_argument("--stop-at", type=float, help="CLOCK_MONOTONIC time to stop")
    parser.add_argument("--seconds", type=float, help="stop after this long (instead of --stop-at)")
    args = parser.parse_args(argv)
    if args.interval <= 0 or not args.db.exists():
        parser.error("--interval must be > 0 and --db must exist")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _Stop.handler)
    stop_at = args.stop_at
    if args.seconds is not None:
        stop_at = (args.start_at or time.monotonic()) + args.seconds
    writes = run(
        args.db,
        args.log,
        interval_s=args.interval,
        busy_timeout_s=args.busy_timeout,
        prefix=args.name_prefix,
        start_at=args.start_at,
        stop_at=stop_at,
    )
    summary = summarize(writes)
    print(json.dumps(summary), flush=True)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
