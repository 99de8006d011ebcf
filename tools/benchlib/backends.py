"""The systems the write tables compare, gathered from the backend modules (see system.py)."""

from __future__ import annotations

from . import baseline_naive, ours
from .system import System

BACKENDS = (baseline_naive, ours)
BY_NAME: dict[str, System] = {system.name: system for module in BACKENDS for system in module.SYSTEMS}
SYSTEMS = tuple(BY_NAME)
SYSTEM_TITLES = {
    **{name: system.title for name, system in BY_NAME.items()},
    "ceiling": "ceiling (executemany)",
}
