"""RFC 3339 timestamps as the Rust core writes and sorts them (UTC, microseconds, +00:00)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z, the last RFC 3339 instant


def format_us(unix_us: int) -> str:
    """Format integer microseconds since the Unix epoch as RFC 3339 text in UTC."""
    return (_EPOCH + timedelta(microseconds=unix_us)).isoformat(timespec="microseconds")


def parse(text: str) -> datetime:
    """Parse RFC 3339 text (as stored in the database) into an aware datetime."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:  # SQLite's CURRENT_TIMESTAMP default writes naive UTC text
        value = value.replace(tzinfo=timezone.utc)
    return value
