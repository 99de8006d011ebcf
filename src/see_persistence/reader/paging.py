"""LIMIT and OFFSET as the Reader's callers give them, checked before they reach SQLite."""

from __future__ import annotations

from ..protocol.errors import CallerError

PAGE_SQL = " LIMIT ? OFFSET ?"


def count(value: object, what: str) -> int:
    """`value` if it is a non-negative int, else a CallerError that says what was wrong."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return int(value)  # an int subclass (IntEnum, ...): its plain value
    raise CallerError(f"{what} must be a non-negative int, got {value!r}")


def page(limit: int | None, offset: int) -> tuple[int, int]:
    """LIMIT and OFFSET for SQLite from a checked limit (None: all rows, -1) and offset."""
    return (-1 if limit is None else count(limit, "limit (or None for all)")), count(offset, "offset")


def whole(limit: int | None, offset: object) -> bool:
    """True if the caller asked for every row (no limit, no offset): the SQL needs no LIMIT then."""
    return limit is None and type(offset) is int and offset == 0
