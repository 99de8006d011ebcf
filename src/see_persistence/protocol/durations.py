"""Ages, such as how old a workflow must be to be pruned: 30d, 12h, 90m, 3600s, 2w.

The command line and `Client.prune` read the same forms: the CLI through `parse_duration`
(its errors become usage errors), an app through `check_age` (a timedelta and plain
seconds too; its errors are InvalidOperation, a CallerError).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import InvalidOperation

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)

TEXT_FORMS = "a number and a unit, like 30d, 12h, 90m, 3600s or 2w"
AGE_FORMS = "a timedelta, seconds (int or float), or text like 30d, 12h, 90m, 3600s or 2w"


def duration_seconds(text: str) -> float | None:
    """The seconds in `<number><unit>` text (s, m, h, d, w; case and spaces ignored), else None."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return float(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]


def parse_duration(text: str) -> timedelta:
    """Parse `<number><unit>` (s, m, h, d, w); raises ValueError naming the accepted forms."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise ValueError(f"{_show(text)} is not a duration: use {TEXT_FORMS}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # also a float too long for a finite number of seconds
        raise ValueError(f"{_show(text)} is longer than any age this can hold") from None


def check_age(field: str, value: object) -> float:
    """Return the seconds in an age: a timedelta, int or float seconds, or text like '30d'."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            raise InvalidOperation(f"{field}={_show(value)} is not a finite age; use {AGE_FORMS}") from None
    elif isinstance(value, str):
        parsed = duration_seconds(value)
        if parsed is None:
            raise InvalidOperation(f"{field}: {_show(value)} is not an age; use {AGE_FORMS}")
        seconds = parsed
    else:
        raise InvalidOperation(f"{field} must be an age, got {type(value).__name__}; use {AGE_FORMS}")
    if not math.isfinite(seconds):
        raise InvalidOperation(f"{field}={_show(value)} is not a finite age; use {AGE_FORMS}")
    if seconds < 0:
        raise InvalidOperation(f"{field}={_show(value)} is negative; use {AGE_FORMS}")
    return abs(seconds)  # -0.0 as 0.0


def cutoff_us(now_us: int, age_seconds: float) -> int:
    """The instant `age_seconds` before `now_us`, in integer microseconds, never before the epoch."""
    if age_seconds * 1_000_000 >= now_us:  # also an age too long to convert to an int
        return 0
    return now_us - int(age_seconds * 1_000_000)


def _show(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit integer>"  # repr() refuses past 4300 digits
    text = repr(value)
    return text if len(text) <= 64 else text[:64] + "..."
