"""The systems the write tables compare, gathered from the backend modules (see system.py).

ALONE_BACKENDS run only in their own section (`--backend postgresql`: postgresql_writes.py),
never in the SQLite write tables; their GUI processes are started by name like the others.
"""

from __future__ import annotations

from . import baseline_naive, ours, postgresql_writes
from .system import System

BACKENDS = (baseline_naive, ours)
ALONE_BACKENDS = (postgresql_writes,)
SYSTEMS = tuple(system.name for module in BACKENDS for system in module.SYSTEMS)
BY_NAME: dict[str, System] = {
    system.name: system for module in (*BACKENDS, *ALONE_BACKENDS) for system in module.SYSTEMS
}
SYSTEM_TITLES = {
    **{name: system.title for name, system in BY_NAME.items()},
    "ceiling": "ceiling (executemany)",
}
