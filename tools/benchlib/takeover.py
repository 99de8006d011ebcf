"""Take-over after SIGKILL of the writer: a standby waiting, the writer killed N times (issue 17).

For one backend (PostgreSQL on the run's server, or an SQLite file for comparison): a writer
holds the lease and a standby (`writer --standby`) waits beside it, until its log says
"standing by"; a Client in this process records an audit event every FEED_INTERVAL_S. Then N
times: SIGKILL the holder, and time, from just before the kill,

- until the standby holds the lease: the lease row names a new epoch;
- until the standby's first commit: under the new epoch, the client's instance row records a
  sequence number past the last one committed before it (so the client found the new writer
  and its operations are being committed again).

Each is polled every POLL_INTERVAL_S on a connection of its own (raw sqlite3 read-only, or
psycopg autocommit), so each figure is an upper bound by one poll. The standby becomes the
holder and a new standby is started for the next kill. At the end the client flushes and every
call must be in audit_events exactly once (nothing lost, nothing doubled) with no dead letter.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formatting import fmt_ns, markdown_table
from .processes import BenchError, WriterProcess, log_tail
from .settings import READY_TIMEOUT_S, Settings

log = logging.getLogger("bench")

FEED_INTERVAL_S = 0.002  # the client's pace: 500 audit events/s, so a commit follows a take-over at once
POLL_INTERVAL_S = 0.001
TAKEOVER_TIMEOUT_S = 30.0
FINAL_FLUSH_TIMEOUT_S = 60.0
STANDING_BY = "standing by"  # what a standby logs (at INFO) once it waits for the lease
BACKEND_TITLES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


@dataclass
class TakeoverRun:
    """N SIGKILLs of the writer on one backend, with a standby waiting each time."""

    backend: str
    to_lease_ns: list[int] = field(default_factory=list)
    to_commit_ns: list[int] = field(default_factory=list)
    calls: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


class _Feeder(threading.Thread):
    """A Client recording an audit event every FEED_INTERVAL_S until stopped (its only caller)."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True, name="takeover-feeder")
        self.client = client
        self.calls = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Call at a steady pace until stopped."""
        start = time.monotonic()
        while not self._stop_event.is_set():
            self.client.log_audit_event(
                "bench_takeover", "an event across take-overs", data={"n": self.calls}
            )
            self.calls += 1
            wait = start + self.calls * FEED_INTERVAL_S - time.monotonic()
            if wait > 0:
                self._stop_event.wait(wait)

    def stop(self) -> None:
        """Stop calling (bounded join)."""
        self._stop_event.set()
        self.join(timeout=10)


def _poller(
    backend: str, db: Path | str
) -> tuple[Callable[[str], tuple[int, int, int] | None], Callable[[], None]]:
    """(poll, close): poll(instance_id) -> (lease epoch, lease pid, the instance's last_seq) or None."""
    sql = "SELECT l.epoch, l.pid, i.last_seq FROM writer_lease l, instances i WHERE i.id = {}"
    if backend == "postgresql":
        import psycopg

        conn: Any = psycopg.connect(str(db), autocommit=True)
        text = sql.format("%s")
    else:
        from .databases import open_raw_read_only

        conn = open_raw_read_only(Path(db))
        text = sql.format("?")

    def poll(instance_id: str) -> tuple[int, int, int] | None:
        row = conn.execute(text, (instance_id,)).fetchone()
        return None if row is None or row[2] is None else (int(row[0]), int(row[1]), int(row[2]))

    return poll, conn.close


def _wait_standing_by(writer: WriterProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while STANDING_BY not in log_tail(writer.log_path, 100_000):
        if writer.proc.poll() is not None:
            raise BenchError(f"the standby exited with {writer.proc.returncode}\n{log_tail(writer.log_path)}")
        if time.monotonic() >= deadline:
            raise BenchError(f"the standby pid {writer.pid} did not stand by within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def _database(settings: Settings, backend: str, cell_dir: Path) -> Iterator[Path | str]:
    """A new database: on the run's server (PostgreSQL), or a file in the cell's directory."""
    if backend == "postgresql":
        from .postgresql_writes import _cell_database

        with _cell_database(settings, "takeover") as url:
            yield url
    else:
        yield cell_dir / "workflows.db"


def run_takeover(settings: Settings, backend: str, kills: int) -> TakeoverRun:
    """`kills` SIGKILLs of the writer with a standby waiting, on a new database of `backend`."""
    from see_persistence import Client

    from .postgresql_writes import PG_LISTEN, keys_environment

    run = TakeoverRun(backend)
    cell_dir = settings.workdir / f"takeover-{backend}"
    cell_dir.mkdir(parents=True)
    env = keys_environment(cell_dir)
    extra = ["--listen", PG_LISTEN] if backend == "postgresql" else []
    writers: list[WriterProcess] = []

    def start_writer(standby: bool) -> WriterProcess:
        name = f"writer-{len(writers)}"
        writer = WriterProcess(
            db,
            cell_dir / f"{name}.log",
            extra_args=[*extra, "--standby"] if standby else extra,
            env=env,
            log_level="INFO" if standby else "WARNING",
        )
        writers.append(writer)
        return writer

    with _database(settings, backend, cell_dir) as db:
        holder = start_writer(False)
        client: Any = None
        feeder: _Feeder | None = None
        close_poller: Callable[[], None] | None = None
        try:
            holder.wait_ready()
            client = Client(db, keys_dir=cell_dir / "keys")
            if not client.flush(READY_TIMEOUT_S):
                raise BenchError("the writer did not confirm the client's hello")
            poll, close_poller = _poller(backend, db)
            feeder = _Feeder(client)
            feeder.start()
            standby = start_writer(True)
            _wait_standing_by(standby, READY_TIMEOUT_S)
            for kill in range(kills):
                _kill_once(run, holder, standby, client.instance_id, poll)
                if kill + 1 < kills:
                    holder, standby = standby, start_writer(True)
                    _wait_standing_by(standby, READY_TIMEOUT_S)
            feeder.stop()
            run.calls = feeder.calls
            if not client.flush(FINAL_FLUSH_TIMEOUT_S):
                run.notes.append(f"the client's last flush timed out after {FINAL_FLUSH_TIMEOUT_S:g} s")
            _verify(run, backend, db)
        finally:
            if feeder is not None:
                feeder.stop()
            if client is not None:
                client.close(timeout=5.0)
            if close_poller is not None:
                close_poller()
            for writer in writers:
                writer.stop()
                writer.kill()
    return run


def _kill_once(
    run: TakeoverRun,
    holder: WriterProcess,
    standby: WriterProcess,
    instance_id: str,
    poll: Callable[[str], tuple[int, int, int] | None],
) -> None:
    """SIGKILL the holder; time the standby's lease and its first commit of the client's operations."""
    row = poll(instance_id)
    if row is None or row[1] != holder.pid:
        raise BenchError(f"the writer pid {holder.pid} does not hold the lease: {row}")
    old_epoch, _pid, committed = row
    killed_at = time.perf_counter_ns()
    holder.proc.kill()
    holder.proc.wait(timeout=10)
    lease_at: int | None = None
    deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
    while True:
        row = poll(instance_id)
        now = time.perf_counter_ns()
        if row is not None:
            epoch, pid, seq = row
            if epoch == old_epoch:
                committed = seq  # the killed writer's last commits may still land: not the standby's
            else:
                if lease_at is None:
                    lease_at = now
                    if pid != standby.pid:
                        run.notes.append(f"epoch {epoch} is held by pid {pid}, not the standby {standby.pid}")
                if seq > committed:
                    run.to_lease_ns.append(lease_at - killed_at)
                    run.to_commit_ns.append(now - killed_at)
                    return
        if time.monotonic() >= deadline:
            raise BenchError(
                f"no commit by the standby within {TAKEOVER_TIMEOUT_S:g} s of the kill"
                f" (lease {'taken' if lease_at else 'not taken'})\n{log_tail(standby.log_path)}"
            )
        time.sleep(POLL_INTERVAL_S)


def _verify(run: TakeoverRun, backend: str, db: Path | str) -> None:
    """Every call in audit_events once, and no dead letters: nothing lost, nothing doubled."""
    from see_persistence import Reader

    with Reader(db) as reader:
        rows = int(reader.query("SELECT COUNT(*) FROM audit_events")[0][0])
        distinct = int(reader.query("SELECT COUNT(DISTINCT id) FROM audit_events")[0][0])
        dead = int(reader.query("SELECT COUNT(*) FROM dead_letters")[0][0])
    if rows == distinct == run.calls and not dead:
        run.notes.append(f"verified: {rows} audit events, one per call, across the kills; no dead letters")
    else:
        run.notes.append(
            f"audit_events holds {rows} rows ({distinct} ids), {dead} dead letters; {run.calls} calls"
        )


def takeover_lines(runs: list[TakeoverRun]) -> list[str]:
    """The take-over table: per backend, kills, and median / max of both times."""
    if not runs:
        return []
    out = [
        "### Take-over after SIGKILL of the writer",
        "",
        "A writer holds the lease, a standby (`writer --standby`) waits beside it, and a Client in the"
        f" benchmark's process records an audit event every {FEED_INTERVAL_S * 1000:g} ms. The holder is"
        " SIGKILLed, the standby takes over and a new standby is started, as many times as the table says."
        " Times from just before the kill until the lease row names the standby's epoch, and until the"
        " client's instance row records a commit by the standby (the client found the new writer and its"
        f" operations commit again); polled every {POLL_INTERVAL_S * 1000:g} ms on a connection of its own.",
        "",
    ]
    rows = []
    for run in runs:
        title = BACKEND_TITLES.get(run.backend, run.backend)
        if run.error:
            rows.append([title, "failed", "", "", "", ""])
            continue
        rows.append(
            [
                title,
                str(len(run.to_commit_ns)),
                _median(run.to_lease_ns),
                fmt_ns(max(run.to_lease_ns)) if run.to_lease_ns else "n/a",
                _median(run.to_commit_ns),
                fmt_ns(max(run.to_commit_ns)) if run.to_commit_ns else "n/a",
            ]
        )
    out += markdown_table(
        ["backend", "kills", "kill → lease, median", "max", "kill → first commit, median", "max"], rows
    )
    for run in runs:
        title = BACKEND_TITLES.get(run.backend, run.backend)
        if run.error:
            out.append(f"- {title}: **failed**: {run.error}")
        out += [f"- {title}: {note}" for note in run.notes]
    return [*out, ""]


def _median(values: list[int]) -> str:
    return fmt_ns(statistics.median(values)) if values else "n/a"
