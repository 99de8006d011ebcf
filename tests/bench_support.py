"""What the benchmark's smoke tests share: where the tool is, and reading the report it writes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench.py"
RUN_TIMEOUT_S = 150.0

READ_QUERIES = (
    "get_workflow(id)",
    "list_workflows(limit=50)",
    "list_workflows(limit=50, status='failed')",
    "list_workflows(limit=50, instance_id=...)",
    "list_workflows(limit=50, status='failed', instance_id=...)",
    "get_workflows_for_instance(id), its default limit=100",
    "get_tasks_for_workflow(id)",
    "get_audit_trail(id)",
)


def report_section(text: str, header: str) -> str:
    """The text from `header` up to the next header of the same or a higher level."""
    level = len(header) - len(header.lstrip("#"))
    start = text.index(header)
    pattern = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE)
    match = pattern.search(text, start + len(header))
    return text[start : match.start() if match else len(text)]


def table_rows(section: str) -> list[list[str]]:
    """The body rows of every markdown table in `section`, as cells."""
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def row_labels(text: str, header: str) -> list[str]:
    """The first cell of each body row of the tables under `header`, header rows left out."""
    return [row[0] for row in table_rows(report_section(text, header))[1:]]
