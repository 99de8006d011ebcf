"""RFC 3339 timestamps as the Rust core writes and sorts them (UTC, microseconds, +00:00)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z, the last RFC 3339 instant


def format_us(unix_us: int) -> str:
    """Format integer microseconds since the Unix epoch as RFC 3339 text in UTC."""
    global _last_second_prefix
    seconds, micros = divmod(unix_us, 1_000_000)
    cached_second, prefix = _last_second_prefix  # one tuple: threads never see half an update
    if seconds != cached_second:  # most timestamps in a batch share their second
        prefix = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second_prefix = (seconds, prefix)
    return f"{prefix}{micros:06d}+00:00"


_last_second_prefix: tuple[int, str] = (-1, "")


def parse(text: str) -> datetime:
    """Parse RFC 3339 text (as stored in the database) into an aware datetime.

    Accepts what the Rust core writes too: chrono's to_rfc3339 gives up to nine fractional
    digits, and SQLite's CURRENT_TIMESTAMP default gives naive UTC text with a space.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = datetime.fromisoformat(_normalise(text))  # Python 3.10 reads only 3 or 6 digits
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


_RFC3339 = re.compile(
    r"^(?P<main>[^.Zz+]*?(?:[Tt ]\d\d:\d\d:\d\d)?)(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d\d:?\d\d)?$"
)


def _normalise(text: str) -> str:
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or ""
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    return f"{match['main']}.{fraction}{zone}"
