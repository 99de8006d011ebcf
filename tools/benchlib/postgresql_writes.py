"""Writes on PostgreSQL (issue 17): our writer beside naive PostgreSQL and beside COPY, in one run.

`python tools/bench.py --backend postgresql` runs this section alone (with the take-over of
takeover.py after it), prints it and writes it into docs/BENCHMARKS.md (see `write_section`).
On one server, each system on a new database of its own, audit events only (every operation
is one row, the one workload COPY can do whole):

- naive: PG_P GUI processes, each with its own psycopg connection in autocommit, running the
  writer's own INSERT (protocol/statements_postgresql.py) once per operation: one transaction,
  so one WAL flush, per operation;
- see-persistence: PG_P GUI processes calling `Client(url)`, one `see-persistence writer --db
  URL --listen tcp://127.0.0.1:0` (TCP with CURVE: how clients reach a PostgreSQL writer),
  everything as in the write tables (flooding, paused above Settings.flood_cap unconfirmed);
- ceiling: one process, `COPY ... FROM STDIN` of the same rows in transactions of
  COPY_ROWS_PER_TRANSACTION; only the time inside COPY and COMMIT counts.

The server: `--postgresql-url` (a database on it where this user may CREATE DATABASE), else a
throwaway cluster (tests/postgres_server.py) turned durable (fsync, synchronous_commit and
full_page_writes on: what a user's server runs; the test suite's cluster has them off). The
server's settings that decide commit cost are read back and printed with the figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .baseline_naive import CommitsEachCall
from .figures import Cell, Phase
from .formatting import TIMES, fmt_cpu, fmt_ns, fmt_rate, fmt_ratio, markdown_table
from .ours import OursGui, flood_and_flush, note_profile, stop_all
from .phases import run_gui_phase, start_guis
from .processes import Children, Sampler, WriterProcess
from .settings import Settings
from .system import System
from .targets import Target, ratio_target

if TYPE_CHECKING:
    from .takeover import TakeoverRun

PG_P = 4
PG_WORKLOAD = "audit"
PG_LISTEN = "tcp://127.0.0.1:0"
COPY_ROWS_PER_TRANSACTION = 1000
TAKEOVERS = 10  # SIGKILLs of the writer per backend
TAKEOVERS_QUICK = 3
PG_QUICK_SECONDS = 2.0  # --quick: each system's window (the SQLite cells' 0.5 s is too short here)
PG_QUICK_WARMUP = 0.5
TARGET_VS_NAIVE = 5.0
TARGET_VS_CEILING = 0.60
# The server settings printed beside the figures: what a commit costs depends on them.
SHOWN_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_wal_size",
)


def _audit_params(instance_id: str, workflow_id: str, n: int, new_id: Any) -> tuple[Any, ...]:
    """One audit event's parameters in the SQLite statement's order (what the writer binds)."""
    from see_persistence.protocol.timestamps import format_us

    from .workloads import json_text

    values = {
        "id": new_id(),
        "workflow_id": workflow_id,
        "task_id": None,
        "event_type": "bench_event",
        "message": "benchmark audit event",
        "at": format_us(time.time_ns() // 1000),
        "data": json_text({"n": n}),
        "instance_id": instance_id,
    }
    return tuple(values[name] for name in _audit_statement().names)


def _audit_statement() -> Any:
    from see_persistence.protocol import operations as ops
    from see_persistence.protocol import statements

    return statements.COMPILED[(ops.AUDIT_EVENT, None)]


class NaivePostgresGui(CommitsEachCall):
    """Naive PostgreSQL: this GUI's own connection, autocommit, one INSERT per audit event.

    Audit events only (PG_WORKLOAD): the write call is the INSERT, its round trip and its commit.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        from see_persistence.idgen import new_id
        from see_persistence.protocol import statements_postgresql as pgsql

        self.conn = psycopg.connect(str(url), autocommit=True)
        self.instance_id = new_id()
        self._new_id = new_id
        self._statement = pgsql.for_statement(_audit_statement())

    def log_audit_event(
        self,
        event_type: str,
        message: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """INSERT one audit event, committed before it returns."""
        from see_persistence.protocol.timestamps import format_us

        from .workloads import json_text

        record_id = self._new_id()
        values = {
            "id": record_id,
            "workflow_id": workflow_id,
            "task_id": task_id,
            "event_type": event_type,
            "message": message,
            "at": format_us(time.time_ns() // 1000),
            "data": json_text(data),
            "instance_id": self.instance_id,
        }
        params = tuple(values[name] for name in _audit_statement().names)
        self.conn.execute(self._statement.sql, self._statement.params(params))
        return record_id


@contextmanager
def _cell_database(settings: Settings, name: str) -> Iterator[str]:
    """A new database for one cell on the run's server (settings.postgresql_url), dropped after."""
    from .reads_postgresql import _new_database

    assert settings.postgresql_url, "the section sets the server's URL before running a cell"
    with _new_database(settings.postgresql_url, prefix=f"see_bench_{name}_") as url:
        yield url


def _create_schema(url: str) -> None:
    """The writer's schema on a new database (the naive GUIs and the ceiling have no writer)."""
    import psycopg

    from see_persistence.writer.pg_storage import upgrade_schema

    with psycopg.connect(url) as conn:
        upgrade_schema(conn, time.time_ns() // 1000)


def _count(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def keys_environment(cell_dir: Path) -> dict[str, str]:
    """This environment with the cell's own owner-only key directory (writer and clients share it)."""
    return {**os.environ, "SEE_PERSISTENCE_KEYS_DIR": str(cell_dir / "keys")}


def run_naive_postgresql(settings: Settings, workload: str, procs: int) -> Cell:
    """P GUI processes, each its own connection, one autocommitted INSERT per operation (flooding)."""
    cell = Cell("pg-naive", workload, procs)
    cell_dir = settings.workdir / f"pg-{workload}-naive-{procs}"
    cell_dir.mkdir(parents=True)
    with _cell_database(settings, "naive") as url:
        _create_schema(url)
        group = Children()
        try:
            start_guis(group, cell_dir, "pg-naive", url, workload, procs)
            cell.flood, _ = run_gui_phase(
                group, cell_dir, "flood", "flood", settings.seconds, settings.warmup
            )
            group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 30)
        finally:
            group.close()
        cell.rows = _count(url, "audit_events")
    return cell


def run_ours_postgresql(settings: Settings, workload: str, procs: int) -> Cell:
    """P GUI processes calling Client(url), one writer over TCP with CURVE (flooding)."""
    cell = Cell("pg-ours", workload, procs)
    cell_dir = settings.workdir / f"pg-{workload}-ours-{procs}"
    cell_dir.mkdir(parents=True)
    env = keys_environment(cell_dir)
    with _cell_database(settings, "ours") as url:
        profile = (
            settings.profile_dir / f"writer-pg-{workload}-{procs}.prof" if settings.profile_dir else None
        )
        writer = WriterProcess(
            url, cell_dir / "writer.log", profile, extra_args=["--listen", PG_LISTEN], env=env
        )
        sampler: Sampler | None = None
        group = Children()
        try:
            writer.wait_ready()
            sampler = Sampler(writer.pid)
            sampler.start()
            start_guis(group, cell_dir, "pg-ours", url, workload, procs, env)
            flood_and_flush(settings, group, cell_dir, sampler, cell)
            if cell.flood.rate == 0:
                cell.notes.append(
                    f"no commit was confirmed inside the flood's {settings.seconds:g} s window (shorter than"
                    " the round trip through the backlog the GUIs queued)"
                )
            cell.writer_rss = sampler.peak_rss()
            group.broadcast(lambda _i: {"cmd": "finish", "timeout": 5.0}, time.monotonic() + 60)
            for child in group.members:
                child.wait_exit(10)
            sampler.stop()
            cell.writer_exit.append(writer.stop())
        finally:
            stop_all(group, sampler, writer)
        note_profile(cell, profile)
        cell.rows = _count(url, "audit_events")
        dead = _count(url, "dead_letters")
        calls = cell.flood.ops if cell.flood else 0
        if cell.rows != calls or dead:
            cell.notes.append(
                f"audit_events holds {cell.rows} rows, {dead} dead letters; the GUIs made {calls} calls"
            )
        else:
            cell.notes.append(f"verified: {cell.rows} audit events, one per call, no dead letters")
    return cell


def run_copy_ceiling(settings: Settings) -> Cell:
    """One process, COPY FROM STDIN of audit events in transactions of COPY_ROWS_PER_TRANSACTION rows."""
    import psycopg

    from see_persistence.idgen import new_id
    from see_persistence.protocol import statements_postgresql as pgsql

    cell = Cell("pg-ceiling", PG_WORKLOAD, 1)
    copy_form = pgsql.COPY_FORMS[_audit_statement().sql]
    with _cell_database(settings, "ceiling") as url:
        _create_schema(url)
        instance_id, workflow_id = new_id(), new_id()
        ops, copy_s, cpu_s, n = 0, 0.0, 0.0, 0
        wall_deadline = time.monotonic() + 4 * settings.seconds + 10
        with psycopg.connect(url) as conn:
            counted = False  # the first chunk warms the connection and the server's caches
            while not counted or (copy_s < settings.seconds and time.monotonic() < wall_deadline):
                rows = [
                    _audit_params(instance_id, workflow_id, n + i, new_id)
                    for i in range(COPY_ROWS_PER_TRANSACTION)
                ]
                n += COPY_ROWS_PER_TRANSACTION
                c0, t0 = time.process_time(), time.perf_counter()
                with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_form.sql) as copy:
                    for params in rows:
                        copy.write_row(copy_form.row(params))
                if counted:
                    copy_s += time.perf_counter() - t0
                    cpu_s += time.process_time() - c0
                    ops += COPY_ROWS_PER_TRANSACTION
                counted = True
        cell.rows = _count(url, "audit_events")
    cell.flood = Phase(
        rate=ops / copy_s if copy_s else 0.0,
        ops=ops,
        window_s=copy_s,
        gui_cpu_us_per_op=cpu_s / ops * 1e6 if ops else None,
        latency=None,
    )
    return cell


SYSTEMS = (
    System("pg-naive", "naive PostgreSQL", NaivePostgresGui, run_naive_postgresql),
    System("pg-ours", "see-persistence on PostgreSQL", OursGui, run_ours_postgresql),
)


@dataclass
class PostgresSection:
    """The writes on PostgreSQL and the take-over times (takeover.py), measured in one run."""

    server: str = ""  # "throwaway cluster" or the URL given (its password never shown)
    settings: dict[str, str] = field(default_factory=dict)
    naive: Cell | None = None
    ours: Cell | None = None
    ceiling: Cell | None = None
    takeovers: list[TakeoverRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _server_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        shown = {}
        for name in SHOWN_SETTINGS:
            row = conn.execute(f"SHOW {name}").fetchone()
            shown[name] = str(row[0]) if row else "?"
        return shown


def run_postgresql_section(settings: Settings, takeovers: int) -> PostgresSection:
    """The three systems on one server (each guarded), then the take-over, PostgreSQL and SQLite."""
    from see_persistence.backends import redact_url

    from .reads_postgresql import _server
    from .runner import _guard

    section = PostgresSection(
        server=redact_url(settings.postgresql_url) if settings.postgresql_url else "a throwaway cluster"
    )
    with _server(settings, durable=True) as server_url:
        section.settings = _server_settings(server_url)
        on_server = replace(settings, postgresql_url=server_url)

        def failed(system: str) -> Any:
            return lambda reason: Cell(system, PG_WORKLOAD, PG_P, error=reason)

        section.ceiling = _guard(
            "PostgreSQL ceiling (COPY)", lambda: run_copy_ceiling(on_server), failed("pg-ceiling")
        )
        section.naive = _guard(
            f"naive PostgreSQL P={PG_P}",
            lambda: run_naive_postgresql(on_server, PG_WORKLOAD, PG_P),
            failed("pg-naive"),
        )
        section.ours = _guard(
            f"see-persistence on PostgreSQL P={PG_P}",
            lambda: run_ours_postgresql(on_server, PG_WORKLOAD, PG_P),
            failed("pg-ours"),
        )
        if takeovers > 0:  # while the server runs
            section.takeovers.append(_guarded_takeover(on_server, "postgresql", "PostgreSQL", takeovers))
    if takeovers > 0:
        section.takeovers.append(_guarded_takeover(settings, "sqlite", "SQLite", takeovers))
    return section


def _guarded_takeover(settings: Settings, backend: str, shown: str, takeovers: int) -> TakeoverRun:
    """The take-over measurement on one backend; a failure becomes a TakeoverRun with its reason."""
    from .runner import _guard
    from .takeover import TakeoverRun, run_takeover

    return _guard(
        f"take-over on {shown}",
        lambda: run_takeover(settings, backend, takeovers),
        lambda reason: TakeoverRun(backend, error=reason),
    )


def _rate(cell: Cell | None) -> float | None:
    return cell.flood.rate if cell is not None and cell.flood is not None and not cell.error else None


def section_targets(section: PostgresSection) -> list[Target]:
    """Issue 17's write targets: ours at least 5 times naive PostgreSQL and 0.6 of the COPY ceiling."""
    ours, naive, ceiling = _rate(section.ours), _rate(section.naive), _rate(section.ceiling)
    return [
        ratio_target(
            f"postgresql: rows/s, P={PG_P}, ≥ {TARGET_VS_NAIVE:g}{TIMES} naive PostgreSQL",
            ours,
            naive,
            fmt_rate,
            TARGET_VS_NAIVE,
            at_least=True,
        ),
        ratio_target(
            f"postgresql: rows/s, P={PG_P}, ≥ {TARGET_VS_CEILING:.0%} of the ceiling (COPY)",
            ours,
            ceiling,
            fmt_rate,
            TARGET_VS_CEILING,
            at_least=True,
        ),
    ]


def section_lines(section: PostgresSection, seconds: float, warmup: float) -> list[str]:
    """The PostgreSQL section: the server, the three systems' rows/s, the write call, the take-over."""
    from .takeover import takeover_lines

    out = ["## PostgreSQL", ""]
    shown = ", ".join(f"{name} {value}" for name, value in section.settings.items())
    out += [
        f"On {section.server} ({shown or 'settings not read'}). Audit events only; each system on a new"
        f" database of its own, {seconds:g} s after {warmup:g} s of warm-up. naive: {PG_P} GUI processes,"
        " each with its own psycopg connection in autocommit, one INSERT (the writer's own statement)"
        f" per operation. see-persistence: {PG_P} GUI processes calling `Client(url)`, one writer"
        f" process over TCP with CURVE (`--listen {PG_LISTEN}`), flooding as in the write tables."
        f" ceiling: one process, `COPY ... FROM STDIN` in transactions of {COPY_ROWS_PER_TRANSACTION:,}"
        " rows, only the time inside COPY and COMMIT counted. Our writer's transactions are its batches"
        " (up to 1 MiB of messages: thousands of audit events when the GUIs flood), so on a loaded"
        " machine it can pass a ceiling held to 1,000 rows a commit.",
        "",
    ]
    if section.error:
        out += [f"**failed:** {section.error}", ""]
    naive_rate, ceiling_rate = _rate(section.naive), _rate(section.ceiling)
    rows = []
    for label, cell in (
        ("naive PostgreSQL", section.naive),
        ("see-persistence", section.ours),
        ("ceiling (COPY, 1 process)", section.ceiling),
    ):
        rate = _rate(cell)
        lat = cell.flood.latency if cell is not None and cell.flood is not None else None
        procs = "1" if cell is section.ceiling else str(PG_P)
        rows.append(
            [
                label,
                procs,
                fmt_rate(rate) if cell is None or not cell.error else "failed",
                fmt_ratio(rate, naive_rate),
                fmt_ratio(rate, ceiling_rate),
                fmt_ns(lat.p50 if lat else None),
                fmt_ns(lat.p99 if lat else None),
                fmt_cpu(cell.writer_cpu_us_per_op) if cell is not None else "n/a",
            ]
        )
    out += markdown_table(
        [
            "system",
            "P",
            "committed rows/s",
            "÷ naive",
            "÷ ceiling",
            "write call p50",
            "write call p99",
            "writer CPU per row",
        ],
        rows,
    )
    for label, cell in (
        ("naive", section.naive),
        ("see-persistence", section.ours),
        ("ceiling", section.ceiling),
    ):
        if cell is None:
            continue
        if cell.error:
            out.append(f"- {label}: **failed**: {cell.error}")
        out += [f"- {label}: {note}" for note in cell.notes]
        if cell.drain_s is not None:
            out.append(f"- {label}: the backlog after the flood drained in {cell.drain_s:.2f} s")
        if cell.writer_exit and any(code != 0 for code in cell.writer_exit):
            out.append(f"- {label}: writer exit codes {cell.writer_exit}")
    out += [f"- {note}" for note in section.notes]
    out += [""]
    out += takeover_lines(section.takeovers)
    return out


def run_postgresql_alone(settings: Settings, takeovers: int) -> tuple[str, list[str]]:
    """`--backend postgresql`: the section with the versions and the competing load; (markdown, failures)."""
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    from .processes import LoadWatcher
    from .report import _command, versions
    from .targets import targets_table

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown_versions = versions()
    try:
        import psycopg

        # "python" is what the [postgresql] extra installs; "binary" or "c" is psycopg's C extension.
        shown_versions.append(("psycopg", f"{version('psycopg')} ({psycopg.pq.__impl__} implementation)"))
    except (ImportError, PackageNotFoundError):
        shown_versions.append(("psycopg", "not installed"))
    t0 = time.monotonic()
    watcher = LoadWatcher()
    watcher.start()
    try:
        section = run_postgresql_section(settings, takeovers)
        load = watcher.between(t0, time.monotonic())
    finally:
        watcher.stop()
    duration = time.monotonic() - t0
    lines = section_lines(section, settings.seconds, settings.warmup)
    head = [
        *lines[:2],
        f"`{_command()}` on {started} in {duration:.0f} s"
        + (" — **quick mode: tiny cells, indicative only**" if settings.quick else "")
        + "; CPU used by other processes meanwhile: "
        + ("n/a" if load is None else f"{load[0]:.2f} cores on average, {load[1]:.2f} at most")
        + (" — **the machine was shared; figures are disturbed**" if load and load[0] > 0.25 else "")
        + ".",
        "",
        *(f"- {name}: {value}" for name, value in shown_versions),
        "",
    ]
    text = "\n".join(head + lines[2:] + targets_table("Targets on PostgreSQL", section_targets(section)))
    failed = [
        label
        for label, cell in (
            ("naive PostgreSQL", section.naive),
            ("ours on PostgreSQL", section.ours),
            ("the COPY ceiling", section.ceiling),
        )
        if cell is None or cell.error
    ]
    failed += [f"take-over on {run.backend}" for run in section.takeovers if run.error]
    return text, failed
