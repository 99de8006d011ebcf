"""Everything one run measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from .feed import FeedSection
from .figures import Cell, Latency
from .other_writer_section import OtherWriter
from .reads import Reads
from .settings import Settings


@dataclass
class Results:
    """Everything one run measured."""

    settings: Settings
    cells: dict[tuple[str, str, int], Cell] = field(default_factory=dict)
    ceilings: dict[str, Cell] = field(default_factory=dict)
    reads: Reads | None = None
    reads_postgresql: Reads | None = None  # only with --only reads-postgresql
    other_writer: OtherWriter | None = None
    feed: FeedSection | None = None
    started: str = ""
    duration_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    profiles: list[tuple[str, str]] = field(default_factory=list)
    floor: Latency | None = None
    # P processes flooding a trivial call at once: (processes, json.dumps per call, latency)
    busy_floors: list[tuple[int, int, Latency]] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)
    other_load: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # section -> mean, max
