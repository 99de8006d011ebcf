"""SQL and values between the Reader's SQLite dialect and PostgreSQL's, with no I/O.

The Reader's queries are written once, for SQLite, with `?` placeholders; on PostgreSQL,
psycopg takes `%s`. `qmark_to_psycopg` rewrites the placeholders that stand outside string
literals, quoted identifiers, dollar-quoted bodies and comments, and doubles every `%` (psycopg
reads `%` anywhere in the text, literals included).

`Reader.query()` on PostgreSQL takes either style, so that code written for the SQLite Reader
runs unchanged: with parameters, a statement with `?` placeholders is rewritten as above, and
one without (psycopg's own `%s` / `%(name)s`, or a mapping of parameters) is passed as it is.
Without parameters the text goes to the server untouched, so PostgreSQL's jsonb operators `?`,
`?|` and `?&` work there; with parameters they clash with `?` placeholders (use
`jsonb_exists(...)`, or psycopg's `%s` style).

`rfc3339_text` turns PostgreSQL's text form of a timestamptz into the text the SQLite writer
stores, so that every row reaches rows.py in the same form from either backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

# What the scanner steps over whole: 'literal' (with '' inside, and E'...' whose \' escapes),
# "identifier", $tag$ ... $tag$, -- comment, /* comment */ (PostgreSQL nests them; this does not).
_SKIPPED = re.compile(
    r"""(?P<escaped>[Ee]'(?:[^'\\]|\\.|'')*')"""
    r"""|(?P<literal>'(?:[^']|'')*')"""
    r"""|(?P<identifier>"(?:[^"]|"")*")"""
    r"""|(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?\$(?P=tag)\$)"""
    r"""|(?P<line_comment>--[^\n]*)"""
    r"""|(?P<block_comment>/\*.*?\*/)""",
    re.DOTALL,
)


def _split(sql: str) -> list[tuple[bool, str]]:
    """`sql` as (is code, text) parts: code, and the quoted or commented parts between it."""
    parts: list[tuple[bool, str]] = []
    position = 0
    for match in _SKIPPED.finditer(sql):
        if match.start() > position:
            parts.append((True, sql[position : match.start()]))
        parts.append((False, match.group()))
        position = match.end()
    if position < len(sql):
        parts.append((True, sql[position:]))
    return parts


def count_qmarks(sql: str) -> int:
    """How many `?` stand in `sql` outside literals, quoted identifiers and comments."""
    return sum(text.count("?") for is_code, text in _split(sql) if is_code)


def qmark_to_psycopg(sql: str) -> str:
    """`sql` with each `?` placeholder (outside literals and comments) as `%s`, and `%` as `%%`."""
    return "".join(
        text.replace("%", "%%").replace("?", "%s") if is_code else text.replace("%", "%%")
        for is_code, text in _split(sql)
    )


def user_statement(
    sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> tuple[str, Sequence[Any] | Mapping[str, Any] | None]:
    """The statement and parameters psycopg gets for `Reader.query(sql, params)` (see the module doc).

    None as parameters: psycopg then sends the text untouched.
    """
    if isinstance(params, Mapping):
        return sql, params
    if len(params) == 0:
        return sql, None
    if count_qmarks(sql):
        return qmark_to_psycopg(sql), params
    return sql, params


# Columns the Reader sorts by that may hold NULL. SQLite sorts NULL before every value, and
# PostgreSQL after, so these get SQLite's order spelled out. Only these: on a NOT NULL column
# it changes no order, but PostgreSQL would no longer read the order from an index.
NULLABLE_SORT_COLUMNS = frozenset({"execution_order", "started_at"})
_ORDER_BY = " ORDER BY "
_LIMIT = " LIMIT "


def sqlite_null_order(sql: str, nullable: frozenset[str] = NULLABLE_SORT_COLUMNS) -> str:
    """`sql` with NULLs of `nullable` columns sorted as SQLite sorts them (first ascending).

    For the Reader's own statements: one ORDER BY of plain columns, before any LIMIT.
    """
    start = sql.rfind(_ORDER_BY)
    if start < 0:
        return sql
    start += len(_ORDER_BY)
    end = sql.find(_LIMIT, start)
    end = len(sql) if end < 0 else end
    items = []
    for item in sql[start:end].split(","):
        words = item.split()
        if words and words[0] in nullable:
            descending = len(words) > 1 and words[1].upper() == "DESC"
            item = f"{item.rstrip()} {'NULLS LAST' if descending else 'NULLS FIRST'}"
        items.append(item)
    return sql[:start] + ",".join(items) + sql[end:]


_FRACTION_DIGITS = 6


def rfc3339_text(text: str) -> str:
    """PostgreSQL's text of a timestamptz (ISO DateStyle) as the SQLite writer stores an instant.

    `2026-01-02 03:04:05.5+00` -> `2026-01-02T03:04:05.500000+00:00`: UTC, six fractional digits,
    `+00:00`. Another session time zone's offset is converted to UTC. Text this cannot read
    (`infinity`, years past 9999, BC) is returned as it is, and the row then reads as any odd row
    of the SQLite file does.
    """
    if text.endswith("+00") and len(text) >= 22 and text[10] == " ":
        body = text[:-3]
        if len(body) == 26:  # the usual case: microseconds present, no trailing zeros to pad
            return f"{body[:10]}T{body[11:]}+00:00"
        if len(body) == 19:
            return f"{body[:10]}T{body[11:]}.000000+00:00"
        if body[19] == "." and len(body) < 26:
            return f"{body[:10]}T{body[11:]}{'0' * (26 - len(body))}+00:00"
    try:
        moment = _parse_other(text)
    except ValueError:
        return text
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


_ISO = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d)[ T](?P<time>\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d{1,6}))?"
    r"(?P<sign>[+-])(?P<hours>\d\d)(?::(?P<minutes>\d\d))?(?::(?P<seconds>\d\d))?$"
)


def _parse_other(text: str) -> datetime:
    match = _ISO.match(text)
    if match is None:
        raise ValueError(f"not a timestamptz in PostgreSQL's ISO form: {text!r}")
    fraction = (match["fraction"] or "").ljust(_FRACTION_DIGITS, "0")
    # PostgreSQL may give an offset in seconds (historical zones): datetime keeps them all.
    offset = f"{match['sign']}{match['hours']}:{match['minutes'] or '00'}:{match['seconds'] or '00'}"
    return datetime.strptime(f"{match['date']} {match['time']}.{fraction}{offset}", "%Y-%m-%d %H:%M:%S.%f%z")
