"""What one backend gives the benchmark: a GUI driver for its GUI processes and a group runner.

A backend (the seed's naive design, see-persistence over ipc, and later other transports or
PostgreSQL) is one module that defines `SYSTEMS`, a tuple of `System`, and is listed in
backends.py. The GUI role builds the driver inside each GUI process; the parent runs the
group for each workload and P, and the write tables print it under its title.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .figures import Cell
    from .settings import Settings


@dataclass(frozen=True)
class System:
    """One system measured in the write tables."""

    name: str  # as the command line and the cells know it
    title: str  # as the report prints it
    # Inside a GUI process: the object whose write methods the workload streams call (see
    # workloads.py), with backlog(), committed(done), dropped(), messages(done), flush(t), close(t).
    make_gui: Callable[[Path], Any]
    # In the parent: P GUI processes of this system on one workload, measured as one Cell.
    run_group: Callable[[Settings, str, int], Cell]
