"""`python -m benchlib` (from tools/) runs the benchmark, as `python tools/bench.py` does."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
