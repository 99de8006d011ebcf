"""Ages on the command line: 30d, 12h, 90m, 3600s, 2w (parsed in protocol/durations.py)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from ..protocol.durations import parse_duration

__all__ = ["duration_argument", "parse_duration"]


def duration_argument(text: str) -> timedelta:
    """parse_duration for argparse (a bad value is a usage error)."""
    try:
        return parse_duration(text)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
