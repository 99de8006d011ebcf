"""The seed's JSON columns read back as the app's Rust core stored them, whatever JSON value.

The seed lets `metadata` (workflow_executions) and `data` (audit_events) hold any JSON value
and `logs` (task_executions) a JSON array; this package's own Client stores only objects. A
Reader returns each value as stored: json.loads of the column is the model's value. The
readings that cannot be that are documented on the models: a NULL metadata/data column
reads as {}, text that is not JSON as itself; NULL or JSON null logs as [], a lone JSON
value as a list of it, text that is not JSON as a list of the text.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_protocol_schema import SEED_DDL  # the S_E_E seed's DDL, verbatim

from see_persistence import Client, Reader
from see_persistence.protocol.models import AuditEvent, TaskExecution, WorkflowExecution

# Column text as the Rust core may store it (serde_json, compact or pretty), by a name that
# becomes part of the row ids.
JSON_VALUES = {
    "mixed-array": '["a",1,null]',
    "int-array": "[1,2,3]",
    "empty-array": "[]",
    "null": "null",
    "string": '"text"',
    "int": "42",
    "float": "-1.5",
    "true": "true",
    "false": "false",
    "empty-object": "{}",
    "object": '{"branch":"main","n":1}',
    "nested": '{"a":{"b":[1,{"c":null}],"d":"e"},"f":[],"g":{}}',
    "pretty": json.dumps({"a": [1, {"b": 2.5}], "c": None}, indent=2),
    "unicode": '{"name":"ünïcødé ✓","esc":"\\u00e9\\n"}',
}
OBJECTS = {"empty-object", "object", "nested", "pretty", "unicode"}
NOT_JSON = {"invalid": "{not json", "truncated": '{"a": [1, 2', "two-values": "{} {}", "empty-text": ""}
LOGS = {
    "strings": '["step 1","step 2"]',
    "mixed": '["a",1,null]',
    "ints": "[1,2,3]",
    "nested": '[{"a":1},["b",true],"c"]',
    "empty": "[]",
}
# Logs that are not a JSON array, and what each reads as (the models' docstrings say so).
ODD_LOGS: dict[str, tuple[str | None, list[Any]]] = {
    "sql-null": (None, []),
    "json-null": ("null", []),
    "string": ('"one line"', ["one line"]),
    "int": ("42", [42]),
    "object": ('{"a":1}', [{"a": 1}]),
    "invalid": ("[not json", ["[not json"]),
}

# The Rust core's chrono timestamps take the Reader's validated path; the writer's form, the
# fast one. Both must read the same values.
TIME_FORMS = {
    "chrono": "2026-12-01T07:{:02d}:{:02d}.123456789+00:00",
    "writer": "2026-12-01T07:{:02d}:{:02d}.123456+00:00",
}


def _same(model_value: Any, stored: Any) -> bool:
    """Equal and of the same JSON types (True is not 1, 1.0 is not 1)."""
    return bool(model_value == stored) and json.dumps(model_value) == json.dumps(stored)


def _rust_core_file(path: Path, form: str) -> Path:
    """A seed file whose JSON columns hold every value above, written with plain sqlite3."""
    clock = iter(range(3600))

    def at() -> str:
        n = next(clock)
        return form.format(n // 60, n % 60)

    metadata = {**JSON_VALUES, **NOT_JSON, "sql-null": None}
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.executescript(SEED_DDL)
        for name, text in metadata.items():
            conn.execute(
                "INSERT INTO workflow_executions (id, workflow_name, status, created_at, metadata)"
                " VALUES (?, 'n', 'completed', ?, ?)",
                (f"w-{name}", at(), text),
            )
        conn.execute(
            "INSERT INTO workflow_executions (id, workflow_name, status, created_at) VALUES"
            " ('holder', 'n', 'running', ?)",
            (at(),),
        )
        for name, text in metadata.items():
            conn.execute(
                "INSERT INTO audit_events (id, workflow_id, event_type, message, timestamp, data)"
                " VALUES (?, 'holder', 'x', 'm', ?, ?)",
                (f"e-{name}", at(), text),
            )
        logs: dict[str, str | None] = dict(LOGS)
        logs.update({f"odd-{name}": text for name, (text, _) in ODD_LOGS.items()})
        for order, (name, text) in enumerate(logs.items()):
            conn.execute(
                "INSERT INTO task_executions (id, workflow_id, task_name, status, created_at, logs,"
                " execution_order) VALUES (?, 'holder', 't', 'completed', ?, ?, ?)",
                (f"t-{name}", at(), text, order),
            )
    finally:
        conn.close()
    return path


@pytest.fixture(params=sorted(TIME_FORMS))
def rust_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The file, with chrono's or the writer's timestamps (the validated or the fast path)."""
    return _rust_core_file(tmp_path / f"rust-{request.param}.db", TIME_FORMS[request.param])


def _column(reader: Reader, table: str, column: str, row_id: str) -> Any:
    [(text,)] = reader.query(f"SELECT {column} FROM {table} WHERE id = ?", (row_id,))
    return text


def _expected(text: str | None) -> Any:
    """What a metadata/data column reads as: its JSON value; {} for NULL, the text if not JSON."""
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_metadata_reads_back_as_the_json_value_stored(rust_file):
    with Reader(rust_file) as reader:
        listed = {w.id: w for w in reader.list_workflows(limit=1000)}
        for name in JSON_VALUES:
            stored = json.loads(_column(reader, "workflow_executions", "metadata", f"w-{name}"))
            workflow = reader.get_workflow(f"w-{name}")
            assert workflow is not None
            assert _same(workflow.metadata, stored), name
            assert _same(listed[f"w-{name}"].metadata, stored), name
            assert isinstance(workflow.metadata, dict) == (name in OBJECTS), name  # how callers tell


def test_audit_data_reads_back_as_the_json_value_stored(rust_file):
    with Reader(rust_file) as reader:
        trail = {e.id: e for e in reader.get_audit_trail("holder")}
        paged = {e.id: e for e in reader.get_audit_trail("holder", limit=1000)}
        for name in JSON_VALUES:
            stored = json.loads(_column(reader, "audit_events", "data", f"e-{name}"))
            event = reader.get_audit_event(f"e-{name}")
            assert event is not None
            assert _same(event.data, stored), name
            assert _same(trail[f"e-{name}"].data, stored) and _same(paged[f"e-{name}"].data, stored)


def test_log_items_read_back_as_stored(rust_file):
    with Reader(rust_file) as reader:
        tasks = {t.id: t for t in reader.get_tasks_for_workflow("holder")}
        for name in LOGS:
            stored = json.loads(_column(reader, "task_executions", "logs", f"t-{name}"))
            assert _same(tasks[f"t-{name}"].logs, stored), name
        assert tasks["t-mixed"].logs == ["a", 1, None]  # not ["a", "1", "null"]


def test_what_is_not_a_json_value_reads_as_documented(rust_file):
    with Reader(rust_file) as reader:
        for name, text in {**NOT_JSON, "sql-null": None}.items():
            workflow = reader.get_workflow(f"w-{name}")
            event = reader.get_audit_event(f"e-{name}")
            assert workflow is not None and event is not None
            assert _same(workflow.metadata, _expected(text)), name  # no {"_unparsed": ...}
            assert _same(event.data, _expected(text)), name
        tasks = {t.id: t for t in reader.get_tasks_for_workflow("holder")}
        for name, (_, reads_as) in ODD_LOGS.items():
            assert _same(tasks[f"t-odd-{name}"].logs, reads_as), name


def test_the_values_survive_a_json_round_trip_of_the_models(rust_file):
    with Reader(rust_file) as reader:
        models: list[tuple[type[Any], Any]] = [
            *((WorkflowExecution, w) for w in reader.list_workflows(limit=1000)),
            *((AuditEvent, e) for e in reader.get_audit_trail("holder")),
            *((TaskExecution, t) for t in reader.get_tasks_for_workflow("holder")),
        ]
    assert len(models) > 40
    for model_type, model in models:
        assert model_type.model_validate_json(model.model_dump_json()) == model
        assert model_type.model_validate(model.model_dump()) == model


def test_a_writer_adopting_the_file_keeps_the_values_and_our_writes_store_objects(db, writers):
    _rust_core_file(db, TIME_FORMS["chrono"])
    writers(db).wait_holding_lease()
    with Client(db) as client:
        plain = client.create_workflow("plain")
        tagged = client.create_workflow("tagged", metadata={"branch": "main", "deep": {"a": [1, None]}})
        empty = client.create_workflow("empty", metadata={})
        tid = client.create_task(tagged, "compile", execution_order=1)
        client.append_task_log(tid, "gcc -O2")
        client.append_task_log(tid, "[1, 2]")  # a line that looks like JSON stays a line
        eid = client.log_audit_event("note", "m", workflow_id=tagged, data={"n": [1, "x"]})
        bare = client.log_audit_event("note", "m", workflow_id=tagged)
        assert client.flush(timeout=20)
    with Reader(db) as reader:
        for wid, metadata in (
            (plain, {}),
            (tagged, {"branch": "main", "deep": {"a": [1, None]}}),
            (empty, {}),
        ):
            workflow = reader.get_workflow(wid)
            assert workflow is not None and _same(workflow.metadata, metadata)
            assert isinstance(json.loads(_column(reader, "workflow_executions", "metadata", wid)), dict)
        [task] = reader.get_tasks_for_workflow(tagged)
        assert task.logs == ["gcc -O2", "[1, 2]"]
        for event_id, data in ((eid, {"n": [1, "x"]}), (bare, {})):
            event = reader.get_audit_event(event_id)
            assert event is not None and _same(event.data, data)
            assert isinstance(json.loads(_column(reader, "audit_events", "data", event_id)), dict)
        # The Rust core's rows, now in a file our writer upgraded, read as before.
        for name, text in JSON_VALUES.items():
            workflow = reader.get_workflow(f"w-{name}")
            assert workflow is not None and _same(workflow.metadata, json.loads(text)), name
