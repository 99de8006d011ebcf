"""Timestamps as the Rust core writes and reads them."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from see_persistence.protocol import timestamps

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00.123456+00:00", datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)),
        ("2024-01-01T00:00:00.123456789+00:00", datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)),
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("2024-01-01T00:00:00.5Z", datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)),
        ("2024-01-01 12:30:00", datetime(2024, 1, 1, 12, 30, tzinfo=timezone.utc)),  # CURRENT_TIMESTAMP
    ],
)
def test_parse_reads_what_chrono_and_sqlite_write(text: str, expected: datetime) -> None:
    assert timestamps.parse(text) == expected
    # The fallback that Python 3.10 needs gives the same instant.
    assert datetime.fromisoformat(timestamps._normalise(text)).replace(tzinfo=timezone.utc) == expected


def test_parse_rejects_text_that_is_not_a_timestamp() -> None:
    with pytest.raises(ValueError):
        timestamps.parse("yesterday")


def test_format_us_sorts_as_text_in_time_order() -> None:
    instants = [0, 1, 999_999, 1_000_000, 1_700_000_000_000_000, 1_700_000_000_000_001]
    texts = [timestamps.format_us(us) for us in instants]
    assert texts == sorted(texts)
    assert all(t.endswith("+00:00") and len(t) == 32 for t in texts)
