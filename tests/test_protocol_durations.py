"""Unit tests of ages (protocol/durations.py) and of the CLI's parser built on them."""

from __future__ import annotations

import argparse
import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from see_persistence.commands import durations as cli_durations
from see_persistence.protocol.durations import (
    AGE_FORMS,
    UNIT_SECONDS,
    check_age,
    cutoff_us,
    duration_seconds,
    parse_duration,
)
from see_persistence.protocol.errors import CallerError, InvalidOperation

pytestmark = pytest.mark.unit

NOW_US = 1_700_000_000_123_456


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86_400),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("3600s", 3600),
        ("2w", 2 * 604_800),
        ("0s", 0),
        ("1.5h", 5400),
        (" 7 D ", 7 * 86_400),
        ("10S", 10),
    ],
)
def test_parse_duration_reads_the_cli_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["30", "d", "30x", "-5d", "1e5s", "30 days", "", "1,5h", "inf", "nan"])
def test_parse_duration_refuses_other_text_naming_the_forms(text: str) -> None:
    assert duration_seconds(text) is None
    with pytest.raises(ValueError, match=r"is not a duration: use a number and a unit, like 30d, 12h"):
        parse_duration(text)


def test_parse_duration_refuses_an_age_no_timedelta_holds() -> None:
    with pytest.raises(ValueError, match="longer than any age"):
        parse_duration("9" * 20 + "w")
    with pytest.raises(ValueError, match="longer than any age"):
        parse_duration("9" * 400 + "s")  # more than any float: infinite


def test_the_cli_module_keeps_its_names() -> None:
    assert cli_durations.parse_duration is parse_duration
    assert cli_durations.duration_argument("30d") == timedelta(days=30)
    with pytest.raises(argparse.ArgumentTypeError, match="'30x' is not a duration"):
        cli_durations.duration_argument("30x")
    with pytest.raises(argparse.ArgumentTypeError, match="longer than any age"):
        cli_durations.duration_argument("9" * 400 + "d")


def test_a_long_text_is_cut_short_in_the_reason() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 10_000)
    assert len(str(info.value)) < 200


# --- check_age ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (timedelta(days=30), 2_592_000.0),
        (timedelta(0), 0.0),
        (timedelta(microseconds=1), 1e-6),
        (3600, 3600.0),
        (0, 0.0),
        (2.5, 2.5),
        (-0.0, 0.0),
        ("30d", 2_592_000.0),
        ("12h", 43_200.0),
        ("90m", 5400.0),
        ("3600s", 3600.0),
        ("2w", 1_209_600.0),
        (10**30, 1e30),
        (1e300, 1e300),
    ],
)
def test_check_age_returns_seconds(value: object, seconds: float) -> None:
    result = check_age("older_than", value)
    assert result == seconds
    assert type(result) is float
    assert math.copysign(1, result) == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("30x", "older_than: '30x' is not an age"),
        ("-5d", "older_than: '-5d' is not an age"),
        ("3600", "older_than: '3600' is not an age"),
        ("", "older_than: '' is not an age"),
        (-1, "older_than=-1 is negative"),
        (-0.5, "older_than=-0.5 is negative"),
        (timedelta(seconds=-1), "older_than=datetime.timedelta(days=-1, seconds=86399) is negative"),
        (math.nan, "older_than=nan is not a finite age"),
        (math.inf, "older_than=inf is not a finite age"),
        (-math.inf, "older_than=-inf is not a finite age"),
        (10**400, "older_than=<a 1329-bit integer> is not a finite age"),
        (True, "older_than must be an age, got bool"),
        (False, "older_than must be an age, got bool"),
        (None, "older_than must be an age, got NoneType"),
        (b"30d", "older_than must be an age, got bytes"),
        ([30], "older_than must be an age, got list"),
    ],
    ids=[
        "bad-unit",
        "negative-text",
        "no-unit",
        "empty",
        "negative-int",
        "negative-float",
        "negative-timedelta",
        "nan",
        "inf",
        "minus-inf",
        "huge-int",
        "true",
        "false",
        "none",
        "bytes",
        "list",
    ],
)
def test_check_age_refuses_naming_the_field_and_the_forms(value: object, reason: str) -> None:
    with pytest.raises(InvalidOperation) as info:
        check_age("older_than", value)
    assert info.value.reason.startswith(reason)
    assert info.value.reason.endswith(f"; use {AGE_FORMS}")
    assert isinstance(info.value, CallerError)  # and so a ValueError


def test_the_accepted_forms_are_spelled_out() -> None:
    assert AGE_FORMS == "a timedelta, seconds (int or float), or text like 30d, 12h, 90m, 3600s or 2w"


def test_a_long_value_is_cut_short_in_the_reason() -> None:
    with pytest.raises(InvalidOperation) as info:
        check_age("older_than", "9" * 10_000 + "x")
    assert len(info.value.reason) < 250


@settings(max_examples=300, deadline=None)
@given(
    number=st.one_of(st.integers(0, 10**6), st.decimals(0, 10**6, places=3).map(str)),
    unit=st.sampled_from(sorted(UNIT_SECONDS)),
)
def test_text_timedelta_and_seconds_agree(number: object, unit: str) -> None:
    text = f"{number}{unit}"
    seconds = check_age("age", text)
    assert seconds == pytest.approx(float(str(number)) * UNIT_SECONDS[unit])
    assert check_age("age", seconds) == seconds
    assert check_age("age", parse_duration(text)) == pytest.approx(seconds, abs=1e-6)


# --- cutoff_us ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, NOW_US),
        (1.0, NOW_US - 1_000_000),
        (86_400.0, NOW_US - 86_400_000_000),
        (1e-6, NOW_US - 1),
        (NOW_US / 1e6, 0),
        (1e12, 0),  # before the epoch: nothing is older
        (1e303, 0),  # microseconds beyond any float
    ],
)
def test_cutoff_us(age: float, expected: int) -> None:
    assert cutoff_us(NOW_US, age) == expected
