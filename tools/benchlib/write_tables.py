"""The write sections: each workload's tables, every system at every P beside the baselines; their targets."""

from __future__ import annotations

import os

from .backends import SYSTEM_TITLES
from .figures import latency_of, phase_of, rate_of
from .formatting import (
    TIMES,
    fmt_bytes,
    fmt_cpu,
    fmt_mb,
    fmt_ns,
    fmt_num,
    fmt_rate,
    fmt_ratio,
    markdown_table,
)
from .results import Results
from .settings import CONTROL_DUMPS, CONTROL_EVERY, LIGHT_FRACTION
from .targets import (
    TARGET_CALL_MAX_NS,
    TARGET_CALL_P99_NS,
    TARGET_CALL_P999_NS,
    TARGET_DISK_RATIO,
    TARGET_THROUGHPUT_VS_CEILING,
    TARGET_THROUGHPUT_VS_NAIVE,
    TARGET_VISIBLE_P99_NS,
    TARGET_WRITER_RSS_BYTES,
    Target,
    limit_target,
    ratio_target,
    target_p,
)
from .workloads import WORKLOAD_TITLES, WORKLOADS


def _latency_rows(results: Results, workload: str, phase: str, baseline_phase: str | None) -> list[list[str]]:
    rows: list[list[str]] = []
    for p in results.settings.procs:
        base = results.cells.get((workload, "naive-same", p))
        ours = results.cells.get((workload, "ours", p))
        base_lat = latency_of(base, baseline_phase) if baseline_phase else None
        ours_lat = latency_of(ours, phase)
        if baseline_phase:
            rate = phase_of(base, baseline_phase)
            rows.append(
                [
                    str(p),
                    SYSTEM_TITLES["naive-same"],
                    fmt_rate(rate.per_gui_rate) if rate and rate.per_gui_rate else "flat out",
                    *(
                        fmt_ns(getattr(base_lat, k)) if base_lat else "n/a"
                        for k in ("p50", "p99", "p999", "max")
                    ),
                    str(base_lat.n) if base_lat else "0",
                ]
            )
        rate = phase_of(ours, phase)
        cells = []
        for k in ("p50", "p99", "p999", "max"):
            value = getattr(ours_lat, k) if ours_lat else None
            text = fmt_ns(value)
            if base_lat is not None and value is not None:
                text += f" ({fmt_ratio(value, getattr(base_lat, k))})"
            cells.append(text)
        extra = f", {rate.dropped} dropped" if rate and rate.dropped else ""
        rows.append(
            [
                str(p),
                SYSTEM_TITLES["ours"],
                fmt_rate(rate.per_gui_rate) if rate and rate.per_gui_rate else "flat out",
                *cells,
                (str(ours_lat.n) if ours_lat else "0") + extra,
            ]
        )
    return rows


def _dumps_text(count: int) -> str:
    return "one `json.dumps`" if count == 1 else f"{count} `json.dumps`"


def _control_section(results: Results, workload: str, phase_name: str) -> list[str]:
    """The trivial call timed inside the same loops as the write calls, beside them."""
    rows = []
    for p in results.settings.procs:
        for system in ("naive-same", "ours"):
            phase = phase_of(results.cells.get((workload, system, p)), phase_name)
            if phase is None or phase.control is None or phase.latency is None:
                continue
            c, w = phase.control, phase.latency
            rows.append(
                [
                    str(p),
                    SYSTEM_TITLES[system],
                    fmt_ns(c.p50),
                    fmt_ns(c.p99),
                    fmt_ns(c.p999),
                    fmt_ns(w.p50),
                    fmt_ns(w.p99),
                    fmt_ratio(w.p99, c.p99),
                    str(c.n),
                ]
            )
    if not rows:
        return []
    when = (
        f"every {CONTROL_EVERY}th turn of each flooding GUI's loop also times"
        if phase_name == "flood"
        else f"every {CONTROL_EVERY}th wakeup of each paced GUI first times"
    )
    out = [
        f"The machine's own tail, in the same loops: {when} {_dumps_text(CONTROL_DUMPS)} of a small"
        " dict as one call (no I/O, no lock), in the same processes at the same moments as the write"
        " calls above."
        + (
            " The write calls of those wakeups, on caches the trivial call warmed, are left out of the"
            " write call's figures."
            if phase_name == "paced"
            else ""
        ),
        "",
    ]
    return out + markdown_table(
        [
            "P",
            "system",
            "trivial call p50",
            "trivial p99",
            "trivial p99.9",
            "write call p50",
            "write call p99",
            "write p99 ÷ trivial p99",
            "trivial calls",
        ],
        rows,
    )


def _throughput_table(results: Results, workload: str) -> list[str]:
    """Committed rows/s."""
    procs = results.settings.procs
    ceiling = results.ceilings.get(workload)
    ceiling_rate = rate_of(ceiling)
    out = ["### Committed rows/s", ""]
    if workload == "mix":
        out += ["Rows written per second: each operation inserts or updates one row (38 a workflow).", ""]
    rows = []
    for p in procs:
        same = rate_of(results.cells.get((workload, "naive-same", p)))
        rnd = rate_of(results.cells.get((workload, "naive-uuid4", p)))
        ours = rate_of(results.cells.get((workload, "ours", p)))
        rows.append(
            [
                str(p),
                fmt_rate(same),
                fmt_rate(rnd),
                fmt_rate(ours),
                fmt_rate(ceiling_rate),
                fmt_ratio(ours, same),
                fmt_ratio(ours, rnd),
                fmt_ratio(ours, ceiling_rate),
            ]
        )
    out += markdown_table(
        [
            "P",
            "naive, same ids",
            "naive, uuid4 ids",
            "see-persistence",
            "ceiling (1 process)",
            "ours ÷ naive same",
            "ours ÷ naive uuid4",
            "ours ÷ ceiling",
        ],
        rows,
    )
    return out


def _latency_tables(results: Results, workload: str) -> list[str]:
    """Write call latency: flooding, at half the peak, writer absent."""

    out: list[str] = []
    header = ["P", "system", "rate per GUI (ops/s)", "p50", "p99", "p99.9", "max", "calls"]
    out += ["### Write call latency, flooding", ""]
    out += [
        "The GUI's write call: the INSERT/UPDATE for naive, the Client call for us; ratio to naive in ().",
        "",
    ]
    out += markdown_table(header, _latency_rows(results, workload, "flood", "flood"))
    out += _control_section(results, workload, "flood")
    out += ["### Write call latency, each GUI at a steady half of the peak rate", ""]
    out += [
        "Each system at half of its own peak (its committed rows/s at that P, split over the P GUIs).",
        "",
    ]
    out += markdown_table(header, _latency_rows(results, workload, "paced", "paced"))
    out += _control_section(results, workload, "paced")
    out += ["### Write call latency, writer absent (flooding)", ""]
    out += [
        f"The writer stopped; each GUI keeps calling until {results.settings.absent_cap:,} operations wait"
        " in its outbox. Baseline: naive flooding.",
        "",
    ]
    out += markdown_table(header, _latency_rows(results, workload, "absent", "flood"))
    return out


def _visible_table(results: Results, workload: str) -> list[str]:
    """Send -> visible at half and at a quarter of the peak."""
    procs = results.settings.procs
    out = ["### Send → visible, at half the peak rate", ""]
    out += [
        "From the write call to a Reader (another process, polling every 1 ms) seeing the row;"
        " an upper bound. Cores busy: the whole machine's, at that rate (of"
        f" {os.cpu_count() or 1}). Ours once more with each GUI at {LIGHT_FRACTION:g} of the peak"
        " rate: the same path with cores to spare.",
        "",
    ]
    rows = []
    for p in procs:
        base_cell = results.cells.get((workload, "naive-same", p))
        ours_cell = results.cells.get((workload, "ours", p))
        bv = base_cell.visible if base_cell else None
        ov = ours_cell.visible if ours_cell else None
        lv = ours_cell.visible_light if ours_cell else None
        rows.append(
            [
                str(p),
                fmt_ns(bv.p50 if bv else None),
                fmt_ns(bv.p99 if bv else None),
                fmt_ns(ov.p50 if ov else None),
                fmt_ns(ov.p99 if ov else None),
                fmt_ratio(ov.p99 if ov else None, bv.p99 if bv else None),
                str(ov.n if ov else 0),
                fmt_num(ours_cell.machine_busy_paced if ours_cell else None, 2),
                fmt_ns(lv.p50 if lv else None),
                fmt_ns(lv.p99 if lv else None),
                fmt_num(ours_cell.machine_busy_light if ours_cell else None, 2),
            ]
        )
    quarter = f"{LIGHT_FRACTION:g} of the peak"
    out += markdown_table(
        [
            "P",
            "naive p50",
            "naive p99",
            "see-persistence p50",
            "see-persistence p99",
            "p99 ratio",
            "rows seen",
            "cores busy",
            f"ours p50 at {quarter}",
            f"ours p99 at {quarter}",
            f"cores busy at {quarter}",
        ],
        rows,
    )
    return out


def _cpu_tables(results: Results, workload: str) -> list[str]:
    """CPU and memory, flooding and at half the peak."""
    procs = results.settings.procs
    ceiling = results.ceilings.get(workload)
    out = ["### CPU and memory", ""]
    out += [
        "CPU µs per committed operation while flooding (GUIs: all GUI processes together).",
        "Writer RSS: psutil's peak sample (the kernel's VmHWM in ()), against the 60 MB target.",
        "",
    ]
    rows = []
    for p in procs:
        base = results.cells.get((workload, "naive-same", p))
        ours = results.cells.get((workload, "ours", p))
        naive_cpu = base.flood.gui_cpu_us_per_op if base and base.flood else None
        gui_cpu = ours.flood.gui_cpu_us_per_op if ours and ours.flood else None
        writer_cpu = ours.writer_cpu_us_per_op if ours else None
        total = gui_cpu + writer_cpu if gui_cpu is not None and writer_cpu is not None else None
        rss = ours.writer_rss if ours else None
        hwm = ours.writer_rss_hwm if ours else None
        rows.append(
            [
                str(p),
                fmt_cpu(naive_cpu),
                fmt_cpu(gui_cpu),
                fmt_cpu(writer_cpu),
                fmt_cpu(total),
                fmt_ratio(total, naive_cpu),
                "n/a" if not ours or ours.writer_cpu is None else f"{ours.writer_cpu:.2f}",
                f"{fmt_mb(rss)} ({fmt_mb(hwm)})",
                fmt_ratio(rss, TARGET_WRITER_RSS_BYTES),
            ]
        )
    out += markdown_table(
        [
            "P",
            "naive GUIs",
            "our GUIs",
            "our writer",
            "ours total",
            "ours ÷ naive",
            "writer CPU s/s",
            "writer peak RSS",
            "÷ 60 MB",
        ],
        rows,
    )
    if ceiling and ceiling.flood:
        out += [f"Ceiling: {fmt_cpu(ceiling.flood.gui_cpu_us_per_op)} CPU per operation in one process.", ""]
    out += [
        "Flooding beside half the peak rate: operations per message the Client sent (naive: one per"
        " transaction), CPU µs per operation in our GUIs and our writer, the writer's CPU s/s, and"
        f" the cores busy on the whole machine ({os.cpu_count()} CPUs; GUIs, writer, Reader probe,"
        " kernel) at half the peak rate: a GUI paced by sleeps spends CPU on every wakeup.",
        "",
    ]
    rows = []
    for p in procs:
        ours = results.cells.get((workload, "ours", p))
        flood, paced = phase_of(ours, "flood"), phase_of(ours, "paced")
        paced_writer = (
            ours.writer_cpu_paced / paced.rate * 1e6
            if ours and paced and ours.writer_cpu_paced is not None and paced.rate
            else None
        )
        rows.append(
            [
                str(p),
                fmt_num(flood.ops_per_message if flood else None),
                fmt_num(paced.ops_per_message if paced else None),
                fmt_cpu(flood.gui_cpu_us_per_op if flood else None),
                fmt_cpu(paced.gui_cpu_us_per_op if paced else None),
                fmt_cpu(ours.writer_cpu_us_per_op if ours else None),
                fmt_cpu(paced_writer),
                fmt_num(ours.writer_cpu if ours else None, 2),
                fmt_num(ours.writer_cpu_paced if ours else None, 2),
                fmt_num(ours.machine_busy_paced if ours else None, 2),
            ]
        )
    out += markdown_table(
        [
            "P",
            "ops/message flood",
            "ops/message half peak",
            "GUI CPU/op flood",
            "GUI CPU/op half peak",
            "writer CPU/op flood",
            "writer CPU/op half peak",
            "writer CPU s/s flood",
            "writer CPU s/s half peak",
            "machine busy half peak",
        ],
        rows,
    )
    return out


def _disk_table(results: Results, workload: str) -> list[str]:
    """Disk: bytes per event or workflow."""
    procs = results.settings.procs
    ceiling = results.ceilings.get(workload)
    unit = "event" if workload == "audit" else "workflow"
    out = [f"### Disk: bytes per {unit}", ""]
    out += [
        "Pages in use after a checkpoint, divided by the number of "
        + ("audit events" if workload == "audit" else "workflows (with their tasks and events)")
        + ". Raw copy: the same rows inserted in order into a fresh file with the same schema.",
        "",
    ]
    rows = []
    for p in procs:
        ours = results.cells.get((workload, "ours", p))
        same = results.cells.get((workload, "naive-same", p))
        rnd = results.cells.get((workload, "naive-uuid4", p))
        o = ours.bytes_per_unit if ours else None
        r = ours.raw_bytes_per_unit if ours else None
        s = same.bytes_per_unit if same else None
        u = rnd.bytes_per_unit if rnd else None
        rows.append(
            [
                str(p),
                fmt_bytes(o),
                fmt_bytes(r),
                fmt_ratio(o, r),
                fmt_bytes(s),
                fmt_ratio(o, s),
                fmt_bytes(u),
                fmt_ratio(o, u),
            ]
        )
    out += markdown_table(
        [
            "P",
            "see-persistence",
            "raw copy",
            "ours ÷ raw",
            "naive, same ids",
            "ours ÷ naive",
            "naive, uuid4 ids",
            "ours ÷ uuid4",
        ],
        rows,
    )
    if ceiling is not None:
        out += [f"Ceiling file: {fmt_bytes(ceiling.bytes_per_unit)} per {unit}.", ""]
    return out


def workload_section(results: Results, workload: str) -> list[str]:
    """The write tables of one workload: every system at every P, beside the baselines."""
    out = [f"## Writes: {WORKLOAD_TITLES[workload]}", ""]
    for tables in (_throughput_table, _latency_tables, _visible_table, _cpu_tables, _disk_table):
        out += tables(results, workload)
    return out


def section_targets(results: Results) -> list[Target]:
    """The write cells' targets at the target P, met / not met / not measured."""
    p = target_p(results.settings)
    targets: list[Target] = []

    for workload in WORKLOADS:
        w = "audit" if workload == "audit" else "mix"
        ours = results.cells.get((workload, "ours", p))
        same = results.cells.get((workload, "naive-same", p))
        ceiling = results.ceilings.get(workload)
        o, s, c = rate_of(ours), rate_of(same), rate_of(ceiling)
        targets.append(
            ratio_target(
                f"{w}: rows/s, P={p}, ≥ {TARGET_THROUGHPUT_VS_NAIVE:g}{TIMES} naive (same ids)",
                o,
                s,
                fmt_rate,
                TARGET_THROUGHPUT_VS_NAIVE,
                at_least=True,
            )
        )
        targets.append(
            ratio_target(
                f"{w}: rows/s, P={p}, ≥ {TARGET_THROUGHPUT_VS_CEILING:.0%} of the ceiling",
                o,
                c,
                fmt_rate,
                TARGET_THROUGHPUT_VS_CEILING,
                at_least=True,
            )
        )
        for label, phase_name, quantile, limit in (
            ("call p99 at half peak", "paced", "p99", TARGET_CALL_P99_NS),
            ("call p99.9 at half peak", "paced", "p999", TARGET_CALL_P999_NS),
            ("call max at half peak", "paced", "max", TARGET_CALL_MAX_NS),
            ("call p99 flooding", "flood", "p99", TARGET_CALL_P99_NS),
            ("call p99 writer absent", "absent", "p99", TARGET_CALL_P99_NS),
        ):
            latency = latency_of(ours, phase_name)
            value = getattr(latency, quantile) if latency else None
            targets.append(limit_target(f"{w}: {label}, P={p}", value, limit, fmt_ns))
        visible = ours.visible if ours else None
        targets.append(
            limit_target(
                f"{w}: send → visible p99 at half peak, P={p}",
                visible.p99 if visible else None,
                TARGET_VISIBLE_P99_NS,
                fmt_ns,
            )
        )
        targets.append(
            ratio_target(
                f"{w}: disk per row ≤ {TARGET_DISK_RATIO:g}{TIMES} the same rows inserted raw, P={p}",
                ours.bytes_per_unit if ours else None,
                ours.raw_bytes_per_unit if ours else None,
                fmt_bytes,
                TARGET_DISK_RATIO,
                at_least=False,
            )
        )
    rss = [c.writer_rss for c in results.cells.values() if c.system == "ours" and c.writer_rss is not None]
    targets.append(
        limit_target(
            "writer RSS at peak (all runs) ≤ 60 MB",
            max(rss) if rss else None,
            TARGET_WRITER_RSS_BYTES,
            fmt_mb,
        )
    )
    return targets
