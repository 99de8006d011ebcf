"""Rendering rows for people (aligned text) and for programs (JSON lines, CSV)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def cell_text(value: Any) -> str:
    """A value as one line of text: NULL for None, x'..' for bytes, escaped newlines."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"x'{value.hex()}'"
    return str(value).translate(_ESCAPES)


def json_value(value: Any) -> Any:
    """A value JSON can carry: bytes become hex text, the rest stays as it is."""
    return value.hex() if isinstance(value, bytes) else value


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names made unique (a second `id` becomes `id:2`), for JSON object keys."""
    seen: dict[str, int] = {}
    names = []
    for column in columns:
        seen[column] = seen.get(column, 0) + 1
        names.append(column if seen[column] == 1 else f"{column}:{seen[column]}")
    return names


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    """An aligned text table with a header line; numbers aligned right."""
    texts = [[cell_text(value) for value in row] for row in rows]
    widths = [len(name) for name in columns]
    for row in texts:
        for index, text in enumerate(row):
            widths[index] = max(widths[index], len(text))
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(columns) + "\n")
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in texts:
        out.write(line(row) + "\n")


def write_json_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    """One JSON object per row, keyed by column name."""
    names = unique_names(columns)
    for row in rows:
        entry = {name: json_value(value) for name, value in zip(names, row, strict=False)}
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def write_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    """RFC 4180 CSV with a header row; NULL is an empty field, bytes are hex."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else json_value(v) for v in row])
