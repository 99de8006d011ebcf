"""Ages on the command line: 30d, 12h, 90m, 3600s, 2w."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Parse `<number><unit>` (s, m, h, d, w); raises ValueError naming the accepted forms."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, like 30d, 12h, 90m or 3600s")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def duration_argument(text: str) -> timedelta:
    """parse_duration for argparse (a bad value is a usage error)."""
    try:
        return parse_duration(text)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
