"""The verification: the database checked, read-only, against what every client asked for.

Each record a manifest lists must be there exactly once with the last status, output and error
asked for, and each task's log lines in order; anything else is counted as lost, duplicated,
extra or mismatched, with the first few discrepancies kept as text. The other program's rows,
the prune reports, dead letters and `PRAGMA integrity_check` are checked too.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import other_writer

KINDS = ("workflows", "tasks", "log_lines", "events")
CHECK_CHUNK_ROWS = 5000  # rows per read transaction of a check (see _rows)
MAX_DISCREPANCIES = 20  # kept for the report (the counts are always complete)


@dataclass
class KindCounts:
    """Per kind of record: asked for, committed, and what went wrong."""

    asked: int = 0
    committed: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0


@dataclass
class Verification:
    """The database checked against the manifests."""

    kinds: dict[str, KindCounts] = field(default_factory=lambda: {k: KindCounts() for k in KINDS})
    statuses_checked: int = 0
    mismatched: int = 0  # present, but a status, name, output, error or log order differs
    dead_letters: int = 0
    integrity: str = "not checked"
    instances_ended: int = 0
    discrepancies: list[str] = field(default_factory=list)
    discrepancy_count: int = 0

    def note(self, text: str) -> None:
        """Keep the first few discrepancies for the report."""
        self.discrepancy_count += 1
        if len(self.discrepancies) < MAX_DISCREPANCIES:
            self.discrepancies.append(text)

    def total(self, what: str) -> int:
        """The sum over kinds of `lost`, `duplicated` or `extra`."""
        return sum(getattr(k, what) for k in self.kinds.values())

    def clean(self) -> bool:
        """Nothing lost, doubled, extra or changed, and no discrepancy noted."""
        return (
            self.discrepancy_count == 0
            and self.mismatched == 0
            and not any(self.total(what) for what in ("lost", "duplicated", "extra"))
        )

    def merge(self, other: Verification) -> None:
        """Add another check's counts (of other clients) to these."""
        for kind, counts in other.kinds.items():
            mine = self.kinds.setdefault(kind, KindCounts())
            for name in ("asked", "committed", "lost", "duplicated", "extra"):
                setattr(mine, name, getattr(mine, name) + getattr(counts, name))
        self.statuses_checked += other.statuses_checked
        self.mismatched += other.mismatched
        self.dead_letters += other.dead_letters
        self.instances_ended += other.instances_ended
        self.discrepancy_count += other.discrepancy_count
        room = MAX_DISCREPANCIES - len(self.discrepancies)
        self.discrepancies += other.discrepancies[: max(0, room)]


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A mode=ro connection in autocommit, closed at the end."""
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _check_duplicates(v: Verification, kind: str, asked: set[str], counts: Counter[str]) -> None:
    """Count contents the database holds more than once."""
    for content in asked:
        if counts[content] > 1:
            v.kinds[kind].duplicated += counts[content] - 1
            v.note(f"{kind}: {content!r} is there {counts[content]} times")


def _scope(scope: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause for the rows of these instances (all rows when None), and its parameters."""
    if scope is None:
        return "", ()
    return f" WHERE instance_id IN ({', '.join('?' * len(scope))})", tuple(scope)


def _rows(conn: sqlite3.Connection, table: str, columns: str, scope: list[str] | None) -> Iterator[Any]:
    """The rows of `table` (of these instances only, if given), read a chunk at a time.

    Each chunk is its own short read transaction. One long SELECT would hold one snapshot for
    as long as it runs, and while it does the writer's checkpoints cannot start the WAL over
    (sqlite.org wal.html, checkpoint starvation): a soak that checks as it goes would grow the
    very WAL it measures. The rows of an exited client no longer change, so chunks agree.
    One instance at a time: the index on instance_id then yields its rows in rowid order.
    """
    for where, params in [("", ())] if scope is None else [_scope([one]) for one in scope]:
        clause = f"{where} AND rowid > ?" if where else " WHERE rowid > ?"
        last = -(2**63)
        while True:
            rows = conn.execute(
                f"SELECT rowid, {columns} FROM {table}{clause} ORDER BY rowid LIMIT {CHECK_CHUNK_ROWS}",
                (*params, last),
            ).fetchall()
            if not rows:
                break
            for row in rows:
                yield row[1:]
            last = rows[-1][0]


class _Scan:
    """One pass over a table's rows, matched by id against the records of one kind that were asked for.

    Each record's name (a workflow's or task's name, an event's message) is unique to it, so a
    record stored twice, under two ids, shows as its name seen twice.
    """

    def __init__(
        self,
        v: Verification,
        kind: str,
        asked: dict[str, Any],
        name_of: Callable[[Any], str],
        describe_extra: Callable[[Any], str],
        label: str | None = None,
    ) -> None:
        """Match rows against `asked` (id -> record); notes name the kind as `label` (default `kind`)."""
        self.v = v
        self.kind = kind
        self.asked = asked
        self.name_of = name_of  # a record asked for -> its name
        self.describe_extra = describe_extra  # a row nobody asked for -> how its note names it
        self.label = label or kind
        self.counts = v.kinds.setdefault(kind, KindCounts())
        self.counts.asked = len(asked)
        self.names: Counter[str] = Counter()
        self.found: set[str] = set()

    def match(self, row: Any, name: str) -> Any:
        """The record asked for under the row's id (its first column); None, counted extra, if none was."""
        self.names[name] += 1
        want = self.asked.get(row[0])
        if want is None:
            self.counts.extra += 1
            self.v.note(f"{self.label}: extra {row[0]} {self.describe_extra(row)}")
            return None
        self.found.add(row[0])
        return want

    def compare(self, record_id: str, got: Any, want: Any) -> None:
        """Count and note a record whose stored fields differ from those asked for."""
        if got != want:
            self.v.mismatched += 1
            self.v.note(f"{self.label}: {record_id} is {got}, asked for {want}")

    def lost_ids(self) -> set[str]:
        """The records asked for that no row matched."""
        return self.asked.keys() - self.found

    def finish(self, noted_lost: int = 3) -> None:
        """Count what was committed and lost (noting the first `noted_lost`) and what is there twice."""
        self.counts.committed = len(self.found)
        self.counts.lost = self.counts.asked - self.counts.committed
        for record_id in list(self.lost_ids())[: max(0, noted_lost)]:
            self.v.note(f"{self.label}: lost {record_id} {self.name_of(self.asked[record_id])!r}")
        _check_duplicates(self.v, self.kind, {self.name_of(r) for r in self.asked.values()}, self.names)


def _verify_workflows(
    conn: sqlite3.Connection,
    manifests: list[dict[str, Any]],
    v: Verification,
    scope: list[str] | None = None,
    skip_prefix: str | None = None,
) -> None:
    """Every workflow asked for exists once, with its name, last status and last error.

    `scope`: only the rows of these instances are looked at. `skip_prefix`: rows named so are
    the other program's, checked by _verify_other.
    """
    expected = {row[0]: row for m in manifests for row in m["workflows"]}
    scan = _Scan(v, "workflows", expected, lambda want: want[1], lambda row: repr(row[1]))
    for row in _rows(conn, "workflow_executions", "id, workflow_name, status, error_message", scope):
        if skip_prefix is not None and row[1].startswith(skip_prefix):
            continue
        want = scan.match(row, row[1])
        if want is not None:
            v.statuses_checked += 1
            scan.compare(row[0], list(row), want)
    scan.finish()


def _verify_logs(v: Verification, task_id: str, got: list[str], want: list[str]) -> None:
    """A task's logs equal what was asked for, in order; count what is missing, doubled, extra."""
    k = v.kinds["log_lines"]
    if got == want:
        k.committed += len(want)
        return
    wanted, have = Counter(want), Counter(got)
    k.committed += sum(min(n, have[line]) for line, n in wanted.items())
    k.lost += sum(max(0, n - have[line]) for line, n in wanted.items())
    k.duplicated += sum(max(0, n - wanted[line]) for line, n in have.items() if line in wanted)
    k.extra += sum(n for line, n in have.items() if line not in wanted)
    if wanted == have:
        v.mismatched += 1  # the right lines in the wrong order
    v.note(f"log_lines: task {task_id} has {got[:6]}, asked for {want[:6]}")


def _verify_tasks(
    conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification, scope: list[str] | None = None
) -> None:
    """Every task asked for exists once, with its fields, last status and its log lines in order."""
    expected = {row[0]: row for m in manifests for row in m["tasks"]}
    scan = _Scan(v, "tasks", expected, lambda want: want[2], lambda row: repr(row[2]))
    log_lines = v.kinds["log_lines"]
    log_lines.asked = sum(len(row[7]) for row in expected.values())
    columns = "id, workflow_id, task_name, execution_order, status, output, error_message, logs"
    for row in _rows(conn, "task_executions", columns, scope):
        got_logs = json.loads(row[7]) if row[7] else []
        want = scan.match(row, row[2])
        if want is None:
            log_lines.extra += len(got_logs)
            continue
        v.statuses_checked += 1
        scan.compare(row[0], list(row[:7]), want[:7])
        _verify_logs(v, row[0], got_logs, want[7])
    for task_id in scan.lost_ids():
        log_lines.lost += len(expected[task_id][7])
    # Every lost task is noted while there is room (the others note three at most).
    scan.finish(noted_lost=MAX_DISCREPANCIES - len(v.discrepancies))


def _verify_events(
    conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification, scope: list[str] | None = None
) -> None:
    """Every audit event asked for exists once, with its type, message and links."""
    expected = {row[0]: row for m in manifests for row in m["events"]}
    scan = _Scan(v, "events", expected, lambda want: want[2], lambda row: f"{row[1]!r} {row[2]!r}")
    for row in _rows(conn, "audit_events", "id, event_type, message, workflow_id, task_id", scope):
        want = scan.match(row, row[2])
        if want is not None:
            scan.compare(row[0], list(row), want)
    scan.finish()


def _verify_other(conn: sqlite3.Connection, writes: list[other_writer.Write], v: Verification) -> None:
    """The other program's rows: each write that returned ok is there once, unchanged; no other."""
    asked = {w.id: w.name for w in writes if w.ok}
    failed = {w.id for w in writes if not w.ok}

    def describe_extra(row: Any) -> str:
        why = "a write that reported an error is there" if row[0] in failed else "never written"
        return f"{row[1]!r} ({why})"

    scan = _Scan(v, "other_program", asked, lambda name: name, describe_extra, label="other program")
    prefix = other_writer.DEFAULT_PREFIX
    # Its rows have no instance: the seed's index on instance_id finds them without a scan.
    for row in conn.execute(
        "SELECT id, workflow_name, status, metadata FROM workflow_executions WHERE instance_id IS NULL"
    ):
        record_id, name, status, metadata = row
        if not name.startswith(prefix):
            continue  # not the other program's (unattributed rows are counted by verify_rest)
        want = scan.match(row, name)
        if want is not None and (name, status, metadata) != (want, "pending", "{}"):
            v.mismatched += 1
            v.note(f"other program: {record_id} is {(name, status, metadata)}, written {want!r}")
    scan.finish()


def _dead_letters_and_integrity(conn: sqlite3.Connection, v: Verification) -> None:
    v.dead_letters = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    for instance_id, seq, reason in conn.execute(
        "SELECT instance_id, seq, reason FROM dead_letters ORDER BY id LIMIT 3"
    ):
        v.note(f"dead letter from {instance_id} seq {seq}: {reason}")
    v.integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))


def verify(
    db: Path, manifests: list[dict[str, Any]], other_writes: list[other_writer.Write] | None = None
) -> Verification:
    """Check the whole database against what the clients (and the other program) asked for, read-only."""
    v = Verification()
    with read_only(db) as conn:
        skip = other_writer.DEFAULT_PREFIX if other_writes is not None else None
        _verify_workflows(conn, manifests, v, skip_prefix=skip)
        _verify_tasks(conn, manifests, v)
        _verify_events(conn, manifests, v)
        if other_writes is not None:
            _verify_other(conn, other_writes, v)
        ended = {row[0] for row in conn.execute("SELECT id FROM instances WHERE state = 'ended'")}
        v.instances_ended = sum(
            1 for m in manifests if any(i in ended for i in m.get("instance_ids", [m.get("instance_id")]))
        )
        _dead_letters_and_integrity(conn, v)
    return v


def verify_clients(conn: sqlite3.Connection, manifests: list[dict[str, Any]], v: Verification) -> None:
    """Check the rows of these clients' instances only (soak: each client once it has exited)."""
    scope = [str(i) for m in manifests for i in m.get("instance_ids", [m["instance_id"]])]
    _verify_workflows(conn, manifests, v, scope)
    _verify_tasks(conn, manifests, v, scope)
    _verify_events(conn, manifests, v, scope)
    where, params = _scope(scope)
    v.instances_ended += conn.execute(
        "SELECT COUNT(*) FROM instances" + where.replace("instance_id", "id") + " AND state = 'ended'", params
    ).fetchone()[0]


def verify_rest(
    db: Path,
    known_instances: set[str],
    other_writes: list[other_writer.Write] | None,
    pruner_instance: str | None,
    prune_ids: list[str],
    v: Verification,
) -> tuple[dict[str, int], int]:
    """Soak, at the end: no row of an instance nobody started, the other program's rows, the
    prune reports, dead letters and integrity. Returns what the prunes deleted, and how many
    of them committed."""
    known = sorted(known_instances | ({pruner_instance} if pruner_instance else set()))
    marks = ", ".join("?" * len(known))
    with read_only(db) as conn:
        for kind, table in (("workflows", "workflow_executions"), ("tasks", "task_executions")):
            extra = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE instance_id NOT IN ({marks})", known
            ).fetchone()[0]
            if kind == "tasks":  # the other program writes no tasks
                extra += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE instance_id IS NULL").fetchone()[0]
            else:  # its rows have no instance; any other row without one is extra
                extra += sum(
                    1
                    for (name,) in conn.execute(
                        f"SELECT workflow_name FROM {table} WHERE instance_id IS NULL"
                    )
                    if other_writes is None or not name.startswith(other_writer.DEFAULT_PREFIX)
                )
            if extra:
                v.kinds[kind].extra += extra
                v.note(f"{kind}: {extra} rows of no instance this run started")
        extra = conn.execute(
            f"SELECT COUNT(*) FROM audit_events WHERE instance_id IS NULL OR instance_id NOT IN ({marks})",
            known,
        ).fetchone()[0]
        if extra:
            v.kinds["events"].extra += extra
            v.note(f"events: {extra} rows of no instance this run started")
        deleted: Counter[str] = Counter()
        reports = 0
        if pruner_instance is not None:
            asked = set(prune_ids)
            for record_id, event_type, data in conn.execute(
                "SELECT id, event_type, data FROM audit_events WHERE instance_id = ?", (pruner_instance,)
            ):
                if record_id not in asked or event_type != "prune":
                    v.kinds["events"].extra += 1
                    v.note(f"events: {record_id} ({event_type}) of the pruning client is not a prune report")
                    continue
                reports += 1
                deleted.update({k: int(n) for k, n in json.loads(data).items() if isinstance(n, int)})
        if other_writes is not None:
            _verify_other(conn, other_writes, v)
        _dead_letters_and_integrity(conn, v)
    return dict(deleted), reports

