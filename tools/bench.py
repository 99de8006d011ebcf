#!/usr/bin/env python3
"""Benchmark: see-persistence beside the design it replaces and beside SQLite's own ceiling.

    python tools/bench.py [--procs 1,2,4,8] [--seconds N] [--quick] [--output PATH | --no-write]

The code is the package tools/benchlib/ (see its __init__); this file is the command, and the
program every GUI, ceiling and watcher process of a run is started as (`--role ...`).
"""

from __future__ import annotations

import sys
from pathlib import Path

# tools/ on the path: benchlib, and the scripts it imports (other_writer.py, wal_index.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    # A run's own processes (--role) import only what their role needs, not the whole command.
    if "--role" in sys.argv[1:]:
        from benchlib.roles import main
    else:
        from benchlib.cli import main
    raise SystemExit(main())
