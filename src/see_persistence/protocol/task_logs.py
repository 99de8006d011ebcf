"""Where a task's log lines live: the seed's `logs` column up to a bound, then a side table.

The seed keeps a task's log as one JSON array of strings in task_executions.logs, and SQLite
rewrites a TEXT value whole (with its overflow pages) on every change: appending one line to
an N-line array costs O(N), so a chatty task made the writer's commits grow without bound
(5,500 lines of 100 bytes: a 6.1 s commit, and the writer lost its lease). So the column is
bounded: it takes lines while its text stays within LOG_COLUMN_MAX_BYTES; the line that would
pass the bound, and every later one, go to the table `task_log_lines` (one row per line,
keyed by task id and line number, an O(log n) insert), and the column gets one last item,
LOG_CONTINUED, that says so. The column stays a valid JSON array the Rust core reads; the
whole log is the column's items before LOG_CONTINUED, then the table's lines by line_no.

No I/O here: the writer and the Reader call these with what they read.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

LOG_COLUMN_MAX_BYTES = 64 * 1024
"""The most UTF-8 bytes of JSON text the writer puts in a task's `logs` column (its last item,
LOG_CONTINUED, included). A column the Rust core made longer is left as it is, plus that item."""

LOG_LINES_TABLE = "task_log_lines"
"""The side table: (task_id, line_no, line), primary key (task_id, line_no)."""

LOG_CONTINUED = (
    "[see-persistence] this log continues in the table task_log_lines:"
    " SELECT line FROM task_log_lines WHERE task_id = <this task's id> ORDER BY line_no"
)
"""The item the writer appends to a full `logs` column; every later line is in LOG_LINES_TABLE."""

LOG_CONTINUED_JSON = json.dumps(LOG_CONTINUED)
"""LOG_CONTINUED as it appears in the column's JSON text (ASCII, nothing escaped: verbatim)."""

# SQL of the writer's and the Reader's side. The column is read as bytes: text that is not
# UTF-8 (another program's) must not make the writer fail a whole batch, again and again.
SELECT_LOGS = "SELECT CAST(logs AS BLOB) FROM task_executions WHERE id = ?"
SET_LOGS = "UPDATE task_executions SET logs = ?, last_updated = ? WHERE id = ?"
# Past the bound only last_updated changes: a value of the same size is overwritten in place,
# and SQLite writes only the pages whose bytes changed (not the column's overflow pages).
TOUCH_TASK = "UPDATE task_executions SET last_updated = ? WHERE id = ?"
LAST_LINE_NO = f"SELECT MAX(line_no) FROM {LOG_LINES_TABLE} WHERE task_id = ?"
INSERT_LINE = f"INSERT INTO {LOG_LINES_TABLE} (task_id, line_no, line) VALUES (?, ?, ?)"
SELECT_LINES = f"SELECT line FROM {LOG_LINES_TABLE} WHERE task_id = ? ORDER BY line_no"

_JSON_WHITESPACE = " \t\n\r"
# A str as a JSON string, UTF-8 kept as it is (as SQLite's json functions write it): json.dumps
# with ensure_ascii=False builds an encoder on every call, 14 times slower.
_quote: Callable[[str], str] = json.encoder.encode_basestring
_COMMA_AND_MARKER = len(LOG_CONTINUED_JSON) + 1


class ColumnAppend(NamedTuple):
    """What appending lines to a `logs` column that has not spilled yet comes to."""

    text: str  # the column's new JSON text
    spilled: Sequence[str]  # the lines that go to the side table, in order (none: all fit)
    first_line_no: int  # the line number of the first of them: the count of items before LOG_CONTINUED


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def open_array(text: str | None) -> tuple[str, int]:
    """The column's JSON text without its closing bracket, and how many items it holds.

    Text that is not an array becomes the array a Reader shows for it (models.TaskExecution):
    NULL and JSON null an empty one, another JSON value an array of that value, text that is
    not JSON an array of that text. The items of an array are kept byte for byte (a number
    past 64 bits, the Rust core's formatting): the new lines are spliced in before the `]`.
    """
    if text is None or text == "[]":  # the one a task is created with: nothing to parse
        return "[", 0
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return "[" + _quote(text), 1
    if type(value) is list:
        return text.strip(_JSON_WHITESPACE)[:-1], len(value)
    if value is None:
        return "[", 0
    return "[" + text.strip(_JSON_WHITESPACE), 1


def plan_append(
    text: str | None, lines: Sequence[str], max_bytes: int = LOG_COLUMN_MAX_BYTES
) -> ColumnAppend:
    """Append `lines` to a column holding `text`: those that fit within `max_bytes`, then the rest spill.

    Room for LOG_CONTINUED is kept free below the bound, so the column never passes it once it
    is ours; a column already past it (another program's) gets LOG_CONTINUED and nothing more.
    """
    head, count = open_array(text)
    separator = "," if count else ""
    size = _utf8_len(head) + 1  # and the closing bracket
    parts: list[str] = []
    spilled: Sequence[str] = ()
    for index, line in enumerate(lines):
        item = _quote(line)
        grow = _utf8_len(item) + (1 if count else 0)
        if size + grow + _COMMA_AND_MARKER > max_bytes:
            spilled = lines[index:]
            break
        parts.append(item)
        size += grow
        count += 1
    if spilled:
        parts.append(LOG_CONTINUED_JSON)
    if not parts:
        return ColumnAppend(head + "]", spilled, count)
    return ColumnAppend(head + separator + ",".join(parts) + "]", spilled, count)


def continued_at(items: Sequence[Any]) -> int | None:
    """The index of the LOG_CONTINUED item that the side table's lines stand for, or None.

    The last one: a line that merely reads like it may come earlier, and another program may
    have appended to the column after it. The caller reads the side table only if the column
    text holds LOG_CONTINUED_JSON, and splices only if the table has lines for the task.
    """
    for index in range(len(items) - 1, -1, -1):
        if items[index] == LOG_CONTINUED:
            return index
    return None


def whole_log(items: list[Any], side_lines: list[str]) -> list[Any]:
    """The whole log: the column's items with LOG_CONTINUED replaced by the side table's lines."""
    at = continued_at(items) if side_lines else None
    if at is None:
        return items
    return [*items[:at], *side_lines, *items[at + 1 :]]
