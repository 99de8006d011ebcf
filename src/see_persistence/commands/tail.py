"""`see-persistence tail`: the last audit events, then (--follow) new ones as they commit."""

from __future__ import annotations

import argparse
import json
import logging
import selectors
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..protocol import timestamps
from .base import Command, CommandError, UsageError
from .common import is_server, open_database
from .output import cell_text
from .signals import StopFlag, stop_on_signals

if TYPE_CHECKING:  # the writer command loads no record models: they cost it 14 MB
    from ..reader import Reader

log = logging.getLogger("see_persistence.cli.tail")

FETCH_ROWS = 500  # rows per query while catching up, so memory stays bounded
# Items the watcher may hold for us: each only says "look again", so past this many it
# replaces them with one resync, which says the same.
WATCH_PENDING = 64
AUDIT_EVENT_KIND = "audit_event"

# rowid, not timestamp, orders the events: it grows in commit order, so an event committed
# late with an early client timestamp is still seen by --follow.
_COLUMNS = "rowid, id, timestamp, event_type, workflow_id, task_id, message, data, instance_id"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the tail command's arguments."""
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new events until interrupted"
    )
    parser.add_argument("--workflow", metavar="ID", help="only the events of this workflow")
    parser.add_argument("--type", metavar="T", dest="event_type", help="only events of this type")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    parser.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="show the last N (default 10)"
    )


def _filters(args: argparse.Namespace) -> tuple[str, list[Any]]:
    where, params = [], []
    if args.workflow:
        where.append("workflow_id = ?")
        params.append(args.workflow)
    if args.event_type:
        where.append("event_type = ?")
        params.append(args.event_type)
    return "".join(f" AND {clause}" for clause in where), params


def _format(row: tuple[Any, ...], as_json: bool) -> str:
    _, event_id, stamp, event_type, workflow_id, task_id, message, data, instance_id = row
    if as_json:
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = data  # someone else's text; show it as it is
        return json.dumps(
            {
                "id": event_id,
                "timestamp": stamp,
                "event_type": event_type,
                "workflow_id": workflow_id,
                "task_id": task_id,
                "message": message,
                "data": parsed,
                "instance_id": instance_id,
            },
            ensure_ascii=False,
        )
    try:
        shown = timestamps.parse(stamp).isoformat(timespec="microseconds") if stamp else "-"
    except ValueError:
        shown = cell_text(stamp)
    return f"{shown}  {cell_text(event_type)}  {workflow_id or '-'}  {cell_text(message)}"


def _last(reader: Reader, count: int, where: str, params: list[Any]) -> tuple[list[tuple[Any, ...]], int]:
    """The last `count` matching events oldest first, and the highest rowid seen so far."""
    top = reader.query("SELECT COALESCE(MAX(rowid), 0) FROM audit_events")[0][0]
    if count <= 0:
        return [], int(top)
    rows = reader.query(
        f"SELECT {_COLUMNS} FROM audit_events WHERE rowid <= ?{where} ORDER BY rowid DESC LIMIT ?",
        (top, *params, count),
    )
    rows.reverse()
    return rows, int(top)


# PostgreSQL has no rowid: its audit_events.commit_seq (a PostgreSQL-only column, see
# protocol/schema_postgresql.py) is the number of the commit that inserted each row, so
# (commit_seq, id) orders events in commit order there. A database whose writer has not added
# the column yet is ordered as the Reader orders an audit trail: by timestamp, then id.
_SERVER_COLUMNS = "commit_seq, " + _COLUMNS.partition(", ")[2]
_SERVER_TIME_COLUMNS = "0, " + _COLUMNS.partition(", ")[2]
_HAS_COMMIT_SEQ = (
    "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND table_name = 'audit_events' AND column_name = 'commit_seq')"
)
_TOP_COMMIT = "SELECT COALESCE(MAX(commit_seq), 0) FROM audit_events"


def _has_commit_seq(reader: Reader) -> bool:
    return bool(reader.query(_HAS_COMMIT_SEQ)[0][0])


def _last_on_server(reader: Reader, count: int, where: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The last `count` matching events on PostgreSQL without commit numbers, oldest first."""
    if count <= 0:
        return []
    rows = reader.query(
        f"SELECT {_SERVER_TIME_COLUMNS} FROM audit_events WHERE TRUE{where}"
        " ORDER BY timestamp DESC, id DESC LIMIT ?",
        (*params, count),
    )
    rows.reverse()
    return rows


class _RowidPosition:
    """Where a follower of an SQLite file stands: the highest rowid it has read."""

    def __init__(self, last_rowid: int) -> None:
        self.last_rowid = last_rowid

    def catch_up(
        self, reader: Reader, where: str, params: list[Any], as_json: bool, stop: threading.Event
    ) -> None:
        """Print every matching event committed since, in order."""
        self.last_rowid = _catch_up(reader, self.last_rowid, where, params, as_json, stop)

    def restart(self, reader: Reader) -> None:
        """After a restore replaced the file: from that file's end."""
        self.last_rowid = _restart_after_restore(reader)


class _CommitPosition:
    """Where a follower of PostgreSQL stands: the (commit_seq, id) of the last event read.

    `event_id` None means every event of commit `commit_seq` and before was read. Commits are
    serialized by the lease row (the fence updates it inside each one), so when a reader sees
    commit N, every commit before N is visible too: reading "after the last key" is exact.
    """

    def __init__(self, commit_seq: int, event_id: str | None = None) -> None:
        self.commit_seq, self.event_id = commit_seq, event_id

    @classmethod
    def last(
        cls, reader: Reader, count: int, where: str, params: list[Any]
    ) -> tuple[list[tuple[Any, ...]], _CommitPosition]:
        """The last `count` matching events in commit order, oldest first, and the position after them."""
        top = int(reader.query(_TOP_COMMIT)[0][0])
        if count <= 0:
            return [], cls(top)
        rows = reader.query(
            f"SELECT {_SERVER_COLUMNS} FROM audit_events WHERE commit_seq <= ?{where}"
            " ORDER BY commit_seq DESC, id DESC LIMIT ?",
            (top, *params, count),
        )
        rows.reverse()
        return rows, cls(top)

    def catch_up(
        self, reader: Reader, where: str, params: list[Any], as_json: bool, stop: threading.Event
    ) -> None:
        """Print every matching event committed after this position, in bounded chunks."""
        while not stop.is_set():
            top = int(reader.query(_TOP_COMMIT)[0][0])
            if top < self.commit_seq:
                # The numbers went back: the database was restored from a dump. Its events
                # say nothing of where this follower stood; follow what is committed from now.
                log.info("the database went back to commit %d: following it from there", top)
                self.commit_seq, self.event_id = top, None
                return
            after_params: list[Any]
            if self.event_id is None:
                after, after_params = "commit_seq > ?", [self.commit_seq]
            else:
                after, after_params = "(commit_seq, id) > (?, ?)", [self.commit_seq, self.event_id]
            rows = reader.query(
                f"SELECT {_SERVER_COLUMNS} FROM audit_events WHERE {after} AND commit_seq <= ?{where}"
                " ORDER BY commit_seq, id LIMIT ?",
                (*after_params, top, *params, FETCH_ROWS),
            )
            _emit(rows, as_json)
            if len(rows) < FETCH_ROWS:
                self.commit_seq, self.event_id = top, None
                return
            self.commit_seq, self.event_id = int(rows[-1][0]), str(rows[-1][1])

    def restart(self, reader: Reader) -> None:
        """Nothing to do: a restore on PostgreSQL shows as the numbers going back (catch_up)."""


def _emit(rows: list[tuple[Any, ...]], as_json: bool) -> None:
    for row in rows:
        sys.stdout.write(_format(row, as_json) + "\n")
    sys.stdout.flush()  # a pipe reader sees each batch as it comes


def run(args: argparse.Namespace) -> int:
    """Print the last N audit events, then follow new ones if asked."""
    if args.lines < 0:
        raise UsageError("-n must be 0 or more")
    reader = open_database(args.db)
    where, params = _filters(args)
    on_server = is_server(args.db)
    in_commit_order = not on_server or _has_commit_seq(reader)
    if not in_commit_order:
        if args.follow:
            reader.close()
            raise CommandError(
                f"tail --follow on {args.db}: its audit events have no commit_seq column yet, so"
                " nothing says which events a follower missed; start a writer of this version once"
                " (it adds the column), or run `tail -n N` again"
            )
        _emit(_last_on_server(reader, args.lines, where, params), args.json)
        reader.close()
        return 0
    # The handlers go in before the first line is printed: whoever watches for that line may
    # interrupt at once, and an interrupt must end the command with 0, not a traceback.
    with stop_on_signals() as stop:
        position: _RowidPosition | _CommitPosition
        if on_server:
            rows, position = _CommitPosition.last(reader, args.lines, where, params)
        else:
            rows, last_rowid = _last(reader, args.lines, where, params)
            position = _RowidPosition(last_rowid)
        _emit(rows, args.json)
        if args.follow:
            _follow(reader, position, (where, params), args, stop)
            log.debug("tail stopped by a signal")
    reader.close()
    return 0


def _follow(
    reader: Reader,
    position: _RowidPosition | _CommitPosition,
    filters: tuple[str, list[Any]],
    args: argparse.Namespace,
    stop: StopFlag,
) -> None:
    """Print new events as the change feed announces them, until `stop` is set.

    Any item of the watcher (a change, or a resync: it cannot vouch for what happened) means
    "read what is new since the position" (the last rowid; on PostgreSQL the last commit
    number and id), so a resync after a takeover prints nothing twice
    and skips nothing. Its first item, Resync(STARTED), catches up what was committed between
    the last N and its subscription. With no writer, the watcher polls the file itself.
    """
    from ..reader import Resync, ResyncCause  # here: see TYPE_CHECKING above

    where, params = filters
    with (
        reader.watch(
            workflow_id=args.workflow, kinds=[AUDIT_EVENT_KIND], max_pending=WATCH_PENDING
        ) as watcher,
        selectors.DefaultSelector() as selector,
    ):
        selector.register(watcher.fileno(), selectors.EVENT_READ)
        selector.register(stop.fileno(), selectors.EVENT_READ)
        while not stop.is_set():
            selector.select()  # no timeout: the watcher wakes us, and so does a signal
            if stop.is_set():
                break
            items = watcher.poll()
            if any(isinstance(item, Resync) and item.cause == ResyncCause.FILE_REPLACED for item in items):
                position.restart(reader)
            if items:
                position.catch_up(reader, where, params, args.json, stop)


def _restart_after_restore(reader: Reader) -> int:
    """After the path came to lead to another file (a restore): follow that file from its end.

    Its rowids say nothing about the old file's, so neither "after the last rowid printed"
    nor its history is what a follower wants: only what is committed to it from now on.
    """
    reader.recheck_file()
    top = int(reader.query("SELECT COALESCE(MAX(rowid), 0) FROM audit_events")[0][0])
    log.info("the database file was replaced: following it from its event %d", top)
    return top


def _catch_up(
    reader: Reader, last_rowid: int, where: str, params: list[Any], as_json: bool, stop: threading.Event
) -> int:
    """Print every matching event committed after `last_rowid`, in bounded chunks; the new high mark."""
    while not stop.is_set():
        top = int(reader.query("SELECT COALESCE(MAX(rowid), 0) FROM audit_events")[0][0])
        if top <= last_rowid:
            break
        upper = min(top, last_rowid + FETCH_ROWS)
        chunk = reader.query(
            f"SELECT {_COLUMNS} FROM audit_events WHERE rowid > ? AND rowid <= ?{where} ORDER BY rowid",
            (last_rowid, upper, *params),
        )
        _emit(chunk, as_json)
        last_rowid = upper
    return last_rowid


COMMAND = Command(
    name="tail",
    description="Print audit events one a line (timestamp, type, workflow id, message), oldest first: "
    "the last N, then with --follow every new one as the writer commits it, until SIGINT or SIGTERM "
    "(exit code 0). Events are in commit order, each once, across a writer restart or takeover too. "
    "--follow waits on the writer's change feed; with no writer running it notices changes to the "
    "file within a fraction of a second. After a restore replaces the file it follows the restored "
    "file from its end. On PostgreSQL, commit order is audit_events.commit_seq, then id.",
    examples=(
        "see-persistence tail -n 20",
        "see-persistence tail --follow --type workflow_completed",
        "see-persistence tail --follow --workflow 0190f3c2-... --json",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
