"""What `migrate` copies, and the checksum both sides compute the same way.

The tables copied are the records and what explains them: the seed's three tables, the
task log lines past a task's `logs` column, the GUI instances the records name, and the
dead letters (the evidence of what the writer refused). Not copied, each for its reason:

- `writer_lease`: it names the source's writer; the destination's first writer writes its own.
- `counters`: the source writer's published metrics and totals, meaningless for another database.
- `prune_jobs`: the source writer's work queue; a prune still under way there is finished there.
- `schema_version`: the destination has its own, written when its schema is created.

A checksum is order-independent (a sum, modulo 2**64, of one 64-bit hash per row) over
each row's values in one canonical form, so that the two backends' spellings of one value
agree: an instant as RFC 3339 text in UTC with microseconds (SQLite may hold chrono's nine
digits or CURRENT_TIMESTAMP's naive text; PostgreSQL gives its own form), JSON parsed and
written again with sorted keys (jsonb keeps values, not spelling; an integral number is
an integer), a boolean as 0/1.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timezone
from functools import lru_cache
from typing import Any

import msgpack

from ..protocol import schema, schema_postgresql, timestamps

CHECKSUM_MODULUS = 2**64


@dataclass(frozen=True)
class TableSpec:
    """A table `migrate` copies, in this order (parents before children), and its key."""

    name: str
    key: tuple[str, ...]


MIGRATED_TABLES: tuple[TableSpec, ...] = (
    TableSpec("workflow_executions", ("id",)),
    TableSpec("task_executions", ("id",)),
    TableSpec("task_log_lines", ("task_id", "line_no")),
    TableSpec("audit_events", ("id",)),
    TableSpec("instances", ("id",)),
    TableSpec("dead_letters", ("id",)),
)

NOT_MIGRATED: dict[str, str] = {
    "writer_lease": "it names the source's writer; the destination's writer writes its own",
    "counters": "the source writer's metrics",
    "prune_jobs": "the source writer's work queue",
    "schema_version": "the destination records its own",
}


@lru_cache(maxsize=1)
def declared_types() -> dict[str, dict[str, str]]:
    """table -> column -> SQLite declared type, from the schema as data (protocol/schema.py)."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in schema.upgrade_statements(0):
            conn.execute(statement)
        for table, column, declaration in schema.column_additions(0):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        return {
            spec.name: {
                row[1]: str(row[2]).upper() for row in conn.execute(f"PRAGMA table_info({spec.name})")
            }
            for spec in MIGRATED_TABLES
        }
    finally:
        conn.close()


def _time(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) == 32 and value[10] == "T" and value[19] == "." and value.endswith("+00:00"):
        return value  # the writer's own form (timestamps.format_us), nearly every value
    try:
        return timestamps.parse(value).astimezone(timezone.utc).isoformat(timespec="microseconds")
    except ValueError:
        return value  # someone else's text: compared as it is


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return json.dumps(_integral(parsed), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _boolean(value: Any) -> Any:
    return int(value) if isinstance(value, (bool, int)) else value


def _blob(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def canonicalizer(table: str, column: str) -> Callable[[Any], Any]:
    """The function that puts one column's value in the form both backends agree on."""
    if (table, column) in schema_postgresql.JSONB_COLUMNS:
        return _json
    kind = declared_types()[table].get(column, "TEXT")
    return {"TIMESTAMP": _time, "BOOLEAN": _boolean, "BLOB": _blob}.get(kind, _same)


def _same(value: Any) -> Any:
    return value


class Checksum:
    """A count and an order-independent sum of row hashes; equal rows in any order give equal sums."""

    __slots__ = ("_canon", "count", "total")

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        self._canon = [canonicalizer(table, column) for column in columns]
        self.count = 0
        self.total = 0

    def canonical(self, row: Sequence[Any]) -> list[Any]:
        """The row's values as both backends agree on them."""
        return [canon(value) for canon, value in zip(self._canon, row, strict=True)]

    def add_canonical(self, values: list[Any]) -> None:
        """Count one row already in canonical form."""
        digest = hashlib.blake2b(msgpack.packb(values, use_bin_type=True), digest_size=8).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % CHECKSUM_MODULUS
        self.count += 1

    def add(self, row: Sequence[Any]) -> None:
        """Count one row as read from either backend."""
        self.add_canonical(self.canonical(row))

    def merge(self, other: Checksum) -> None:
        """Add another part of the same table."""
        self.total = (self.total + other.total) % CHECKSUM_MODULUS
        self.count += other.count

    @property
    def hex(self) -> str:
        """The sum as 16 hex digits."""
        return f"{self.total:016x}"
