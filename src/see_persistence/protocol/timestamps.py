"""RFC 3339 timestamps as the Rust core writes and sorts them (UTC, microseconds, +00:00)."""

from __future__ import annotations

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
    """Parse RFC 3339 text (as stored in the database) into an aware datetime."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:  # SQLite's CURRENT_TIMESTAMP default writes naive UTC text
        value = value.replace(tzinfo=timezone.utc)
    return value
