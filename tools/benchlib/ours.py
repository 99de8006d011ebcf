"""see-persistence: GUI processes calling Client, one writer process; flood, paced, light, writer absent."""

from __future__ import annotations

import math
import time
from pathlib import Path

from .databases import measure_disk, remove_db
from .figures import Cell
from .phases import flush_group, paced_phase, run_gui_phase, start_guis
from .processes import Children, Sampler, WriterProcess
from .settings import FLUSH_TIMEOUT_S, LIGHT_FRACTION, Settings
from .system import System
from .workloads import MIX_OPS_PER_WORKFLOW


class OursGui:
    """A GUI process using see-persistence's Client (the write calls are the Client's own methods)."""

    def __init__(self, db: Path) -> None:
        from see_persistence import Client

        self.client = Client(db)
        self.instance_id = self.client.instance_id
        self.create_workflow = self.client.create_workflow
        self.update_workflow_status = self.client.update_workflow_status
        self.create_task = self.client.create_task
        self.update_task_status = self.client.update_task_status
        self.append_task_log = self.client.append_task_log
        self.log_audit_event = self.client.log_audit_event

    def backlog(self) -> int:
        """Operations held by the outbox (not yet confirmed)."""
        return self.client.stats.buffered

    def committed(self, done: int) -> int:
        """Operations the writer confirmed as committed."""
        return self.client.stats.confirmed

    def dropped(self) -> int:
        """Operations refused because the outbox was full."""
        return self.client.stats.dropped

    def messages(self, done: int) -> int:
        """Messages handed to the socket so far."""
        return self.client.stats.messages

    def flush(self, timeout: float) -> bool:
        """Client.flush: True once everything sent is committed."""
        return self.client.flush(timeout)

    def close(self, timeout: float) -> bool:
        """Client.close with a bounded flush."""
        return self.client.close(timeout=timeout)


def flood_and_flush(
    settings: Settings, group: Children, cell_dir: Path, sampler: Sampler, cell: Cell
) -> None:
    """The flood phase (the writer's CPU per operation measured), then every GUI flushed, timed."""
    cell.flood, (warm, stop) = run_gui_phase(
        group, cell_dir, "flood", "flood", settings.seconds, settings.warmup, cap=settings.flood_cap
    )
    if cell.flood.control is None:
        # A short (--quick) window on a loaded machine: the GUIs can be paused on their backlog
        # from before the warm-up to the end, so too few calls (one in 16 times the trivial call).
        calls = cell.flood.latency.n if cell.flood.latency is not None else 0
        cell.notes.append(
            f"flood: {calls} write calls in the {stop - warm:.2f} s window, no trivial call timed:"
            f" every GUI waited on its backlog (more than {settings.flood_cap:,} operations) through it"
        )
    cell.writer_cpu = sampler.cpu_fraction(warm, stop)
    if cell.writer_cpu is not None and cell.flood.rate > 0:
        cell.writer_cpu_us_per_op = cell.writer_cpu / cell.flood.rate * 1e6
    flushed = group.broadcast(
        lambda _i: {"cmd": "flush", "timeout": FLUSH_TIMEOUT_S}, time.monotonic() + FLUSH_TIMEOUT_S + 30
    )
    cell.drain_s = max(a["seconds"] for a in flushed)
    if not all(a["flushed"] for a in flushed):
        cell.notes.append("a flush after the flood timed out")


def stop_all(group: Children, sampler: Sampler | None, writer: WriterProcess) -> None:
    """Whatever happened: close the GUIs, stop sampling, kill the writer if it still runs."""
    group.close()
    if sampler is not None:
        sampler.stop()
    writer.kill()


def note_profile(cell: Cell, profile: Path | None) -> None:
    """Name the writer's profile in the cell's notes, if one was written."""
    if profile is not None and profile.exists():
        cell.notes.append(f"writer profile: {profile}")


def run_ours_group(settings: Settings, workload: str, procs: int) -> Cell:
    """P GUI processes using Client and one writer: flood, half the peak rate, then writer absent."""
    cell = Cell("ours", workload, procs)
    cell_dir = settings.workdir / f"{workload}-ours-{procs}"
    cell_dir.mkdir(parents=True)
    db = cell_dir / "workflows.db"
    profile = settings.profile_dir / f"writer-{workload}-{procs}.prof" if settings.profile_dir else None
    writer = WriterProcess(db, cell_dir / "writer.log", profile)
    sampler: Sampler | None = None
    group = Children()
    try:
        writer.wait_ready()
        sampler = Sampler(writer.pid)
        sampler.start()
        start_guis(group, cell_dir, "ours", db, workload, procs)

        flood_and_flush(settings, group, cell_dir, sampler, cell)

        if cell.flood.rate == 0:
            cell.notes.append(
                f"no commit was confirmed inside the flood's {settings.seconds:g} s window (shorter than"
                " the round trip through the backlog the GUIs queued), so the paced phases did not run"
            )
        if cell.flood.rate > 0:
            cell.paced, cell.visible, window = paced_phase(
                settings, group, cell_dir, db, cell, procs, 0.5, "paced"
            )
            cell.writer_cpu_paced = sampler.cpu_fraction(*window)
            cell.machine_busy_paced = sampler.machine_busy(*window)
        flush_group(group, cell.notes, "the paced phase")
        if cell.flood.rate > 0:
            # The same again, lighter: does send -> visible meet its target once the machine
            # has cores to spare? (At half the peak rate paced GUIs keep it nearly busy.)
            cell.light, cell.visible_light, window = paced_phase(
                settings, group, cell_dir, db, cell, procs, LIGHT_FRACTION, "light"
            )
            cell.machine_busy_light = sampler.machine_busy(*window)
        flush_group(group, cell.notes, "the light phase")
        committed_ops = sum(phase.ops for phase in (cell.flood, cell.paced, cell.light) if phase)
        _verify(cell, db, committed_ops)

        cell.writer_rss = sampler.peak_rss()
        cell.writer_rss_hwm = writer.peak_rss_hwm()
        sampler.stop()
        cell.writer_exit.append(writer.stop())

        # The writer is gone: the GUIs keep calling (flooding, up to absent_cap buffered each).
        cell.absent, _ = run_gui_phase(
            group,
            cell_dir,
            "absent",
            "flood",
            settings.seconds,
            0.0,
            cap=settings.absent_cap,
            end_at_cap=True,
        )
        group.broadcast(lambda _i: {"cmd": "finish", "timeout": 0.3}, time.monotonic() + 60)
        for child in group.members:
            child.wait_exit(10)
    finally:
        stop_all(group, sampler, writer)
    note_profile(cell, profile)
    measure_disk(cell, db, raw=True)
    remove_db(db)
    return cell


def _verify(cell: Cell, db: Path, committed_ops: int) -> None:
    """Check the file holds what the GUIs sent (audit: one row per call; any: no dead letters)."""
    from see_persistence import Reader

    reader = Reader(db)
    try:
        dead = reader.query("SELECT COUNT(*) FROM dead_letters")[0][0]
        if dead:
            cell.notes.append(f"{dead} dead letters")
        if cell.workload == "audit":
            rows = reader.query("SELECT COUNT(*) FROM audit_events")[0][0]
            if rows != committed_ops:
                cell.notes.append(f"audit_events holds {rows} rows; the GUIs made {committed_ops} calls")
            elif not dead:
                cell.notes.append(f"verified: {rows} audit events, one per call, no dead letters")
        else:
            workflows = reader.query("SELECT COUNT(*) FROM workflow_executions")[0][0]
            expected = math.ceil(committed_ops / MIX_OPS_PER_WORKFLOW)
            cell.notes.append(f"{workflows} workflows (~{expected} expected), {dead} dead letters")
    finally:
        reader.close()


SYSTEMS = (System("ours", "see-persistence", OursGui, run_ours_group),)
