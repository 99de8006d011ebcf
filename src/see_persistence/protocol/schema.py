"""The SQL schema, as data: the S_E_E tables exactly as the app's Rust core knows them,
the tables this layer adds, and the additive steps that bring any older file up to date.

Version 1 is the S_E_E seed schema (three tables, ten indexes, `schema_version`);
version 2 adds `writer_lease`, `instances` and `dead_letters`; version 3 adds `counters`;
version 4 adds the indexes behind the newest-first list views, one per instance's dead
letters, and `instances.rejected`; version 5 adds `task_log_lines`, where a task's log lines
go once its `logs` column is full (protocol/task_logs.py). Every step only adds (tables,
indexes, nullable columns), so a file written by a newer version still reads. Version 6
adds `prune_jobs`: retention carried out in chunks (writer/retention.py). Version 7 adds
`writer_lease.commit_seq` and `writer_lease.feed_id`: the number of the writer's last commit
and the random id of the feed that numbers them (the change feed, protocol/feed.py). Version 8
adds `writer_lease.endpoints` and `writer_lease.public_key`: every endpoint pair the writer
bound (TCP ports resolved) and its CURVE public key, so that clients find it in the file.
Version 9 adds the host identity of each instance and of the writer (`host_id`), when the writer
last heard from an instance and how far its clock is from the writer's: an instance on another
host is alive while its heartbeats arrive (writer/remote.py).
"""

from __future__ import annotations

SCHEMA_VERSION = 9

SEED_TABLES = ("workflow_executions", "task_executions", "audit_events")

# Column names and declared types of the S_E_E seed, in its order; tests compare them with
# PRAGMA table_info so that the Rust core keeps reading the same file.
SEED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "workflow_executions": (
        ("id", "TEXT"),
        ("workflow_name", "TEXT"),
        ("status", "TEXT"),
        ("created_at", "TIMESTAMP"),
        ("started_at", "TIMESTAMP"),
        ("completed_at", "TIMESTAMP"),
        ("success", "BOOLEAN"),
        ("error_message", "TEXT"),
        ("metadata", "TEXT"),
        ("instance_id", "TEXT"),
        ("last_updated", "TIMESTAMP"),
    ),
    "task_executions": (
        ("id", "TEXT"),
        ("workflow_id", "TEXT"),
        ("task_name", "TEXT"),
        ("status", "TEXT"),
        ("created_at", "TIMESTAMP"),
        ("started_at", "TIMESTAMP"),
        ("completed_at", "TIMESTAMP"),
        ("success", "BOOLEAN"),
        ("error_message", "TEXT"),
        ("output", "TEXT"),
        ("logs", "TEXT"),
        ("retry_count", "INTEGER"),
        ("execution_order", "INTEGER"),
        ("instance_id", "TEXT"),
        ("last_updated", "TIMESTAMP"),
    ),
    "audit_events": (
        ("id", "TEXT"),
        ("workflow_id", "TEXT"),
        ("task_id", "TEXT"),
        ("event_type", "TEXT"),
        ("message", "TEXT"),
        ("timestamp", "TIMESTAMP"),
        ("data", "TEXT"),
        ("instance_id", "TEXT"),
    ),
}

SEED_INDEXES: dict[str, tuple[str, str]] = {
    "idx_workflow_executions_created_at": ("workflow_executions", "created_at"),
    "idx_workflow_executions_status": ("workflow_executions", "status"),
    "idx_workflow_executions_instance_id": ("workflow_executions", "instance_id"),
    "idx_workflow_executions_last_updated": ("workflow_executions", "last_updated"),
    "idx_task_executions_workflow_id": ("task_executions", "workflow_id"),
    "idx_task_executions_status": ("task_executions", "status"),
    "idx_task_executions_instance_id": ("task_executions", "instance_id"),
    "idx_audit_events_workflow_id": ("audit_events", "workflow_id"),
    "idx_audit_events_timestamp": ("audit_events", "timestamp"),
    "idx_audit_events_instance_id": ("audit_events", "instance_id"),
}

_SEED_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS workflow_executions (
        id TEXT PRIMARY KEY,
        workflow_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP,
        completed_at TIMESTAMP,
        success BOOLEAN,
        error_message TEXT,
        metadata TEXT,
        instance_id TEXT,
        last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS task_executions (
        id TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL,
        task_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP,
        completed_at TIMESTAMP,
        success BOOLEAN,
        error_message TEXT,
        output TEXT,
        logs TEXT,
        retry_count INTEGER DEFAULT 0,
        execution_order INTEGER DEFAULT 0,
        instance_id TEXT,
        last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (workflow_id) REFERENCES workflow_executions(id)
    )""",
    """CREATE TABLE IF NOT EXISTS audit_events (
        id TEXT PRIMARY KEY,
        workflow_id TEXT,
        task_id TEXT,
        event_type TEXT NOT NULL,
        message TEXT NOT NULL,
        timestamp TIMESTAMP NOT NULL,
        data TEXT,
        instance_id TEXT
    )""",
    *(
        f"CREATE INDEX IF NOT EXISTS {index} ON {table}({column})"
        for index, (table, column) in SEED_INDEXES.items()
    ),
)

_LAYER_STATEMENTS: tuple[str, ...] = (
    # One row (id = 1): who may write. Taken and renewed only inside BEGIN IMMEDIATE.
    """CREATE TABLE IF NOT EXISTS writer_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER NOT NULL,
        process_create_time REAL NOT NULL,
        host TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        acquired_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL,
        released_at TIMESTAMP
    )""",
    # One row per GUI instance; last_seq is the highest sequence number committed for it.
    """CREATE TABLE IF NOT EXISTS instances (
        id TEXT PRIMARY KEY,
        pid INTEGER,
        process_create_time REAL,
        host TEXT,
        started_at TIMESTAMP,
        last_seen TIMESTAMP,
        ended_at TIMESTAMP,
        state TEXT NOT NULL DEFAULT 'live',
        last_seq INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS idx_instances_state ON instances(state)",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at TIMESTAMP NOT NULL,
        instance_id TEXT,
        seq INTEGER,
        reason TEXT NOT NULL,
        raw BLOB
    )""",
)

_COUNTER_STATEMENTS: tuple[str, ...] = (
    # Totals the writer keeps across its lives, e.g. dead letters dropped by the cap.
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL DEFAULT 0
    )""",
)

# Indexes of this layer's own, named apart from the seed's ten (`idx_see_` prefix). The seed
# indexes status and instance_id alone, so "newest 50 of one status / one instance" sorted
# every matching row; these serve those views straight from the index, newest first.
LAYER_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "idx_see_workflow_executions_status_created": ("workflow_executions", ("status", "created_at", "id")),
    "idx_see_workflow_executions_instance_created": (
        "workflow_executions",
        ("instance_id", "created_at", "id"),
    ),
    # Both filters at once: without it, "my failed workflows" walks all of mine (91-114 ms
    # at 1M workflows when I have none failed; 0.01 ms with it).
    "idx_see_workflow_executions_instance_status_created": (
        "workflow_executions",
        ("instance_id", "status", "created_at", "id"),
    ),
    "idx_see_dead_letters_instance": ("dead_letters", ("instance_id", "id")),
}

_VIEW_STATEMENTS: tuple[str, ...] = tuple(
    f"CREATE INDEX IF NOT EXISTS {index} ON {table}({', '.join(columns)})"
    for index, (table, columns) in LAYER_INDEXES.items()
)

_TASK_LOG_STATEMENTS: tuple[str, ...] = (
    # A task's log lines past its bounded `logs` column, one row each, numbered by their
    # position in the whole log. WITHOUT ROWID: the rows live in the primary key's B-tree, one
    # insert per line and no second index. Deleting a task deletes its lines (foreign_keys
    # is on in the writer's connection).
    """CREATE TABLE IF NOT EXISTS task_log_lines (
        task_id TEXT NOT NULL REFERENCES task_executions(id) ON DELETE CASCADE,
        line_no INTEGER NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (task_id, line_no)
    ) WITHOUT ROWID""",
)

# A prune operation only records a job here, in its batch; the writer then deletes in short
# transactions of a bounded chunk each, counting as it goes, and a writer that takes over goes on
# with an unfinished job from the file. id is the prune operation's id, which is also the id of
# the audit event reporting what it deleted once it finishes.
_RETENTION_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS prune_jobs (
        id TEXT PRIMARY KEY,
        older_than TIMESTAMP NOT NULL,
        statuses TEXT NOT NULL,
        instance_id TEXT,
        state TEXT NOT NULL DEFAULT 'running',
        workflow_executions INTEGER NOT NULL DEFAULT 0,
        task_executions INTEGER NOT NULL DEFAULT 0,
        audit_events INTEGER NOT NULL DEFAULT 0,
        chunks INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP,
        finished_at TIMESTAMP,
        error TEXT
    )""",
    # The writer looks for unfinished jobs often; finished ones pile up (one per prune).
    "CREATE INDEX IF NOT EXISTS idx_see_prune_jobs_running ON prune_jobs(created_at, id)"
    " WHERE state = 'running'",
)

COLUMN_ADDITIONS: tuple[tuple[int, str, str, str], ...] = (
    # (version, table, column, declaration). ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS:
    # the writer adds each one only where PRAGMA table_info lacks it.
    # How many operations of the instance the writer rejected (dead letters), ever.
    (4, "instances", "rejected", "INTEGER DEFAULT 0"),
    # Which boot of which machine a process ran in (/proc/sys/kernel/random/boot_id): a pid is
    # checked only on the boot it belongs to, whatever the host is called now.
    (4, "instances", "boot_id", "TEXT"),
    (4, "writer_lease", "boot_id", "TEXT"),
    # The holder's last heartbeat on CLOCK_BOOTTIME (ns), shared by every process of the boot
    # and immune to wall-clock steps; heartbeat_at stays, in wall-clock time, for people.
    (4, "writer_lease", "heartbeat_boot_ns", "INTEGER"),
    # SHA-256 of the secret an instance registered with in its hello: only its holder may
    # send as that instance.
    (4, "instances", "token_hash", "TEXT"),
    # The number of the last commit any writer made to this file: monotonic per database, set
    # by the fence UPDATE every writer transaction runs (so no new page per commit), carried
    # over on takeover. A change-feed watcher compares it with the notices it received.
    (7, "writer_lease", "commit_seq", "INTEGER"),
    # Drawn at random each time a writer takes the lease: a watcher that sees it change knows
    # another writer numbers the commits from now on, and resyncs.
    (7, "writer_lease", "feed_id", "INTEGER"),
    # A JSON array of [pull, pub] endpoint pairs, one per place the writer listens (an ipc
    # directory, a TCP address), as bound: port 0 resolved to the port the system gave.
    (8, "writer_lease", "endpoints", "TEXT"),
    # The writer's CURVE public key (Z85) while it listens on TCP; NULL for ipc alone.
    (8, "writer_lease", "public_key", "TEXT"),
    # Where a pid means something (leases.host_id: boot id and pid namespace on Linux): an
    # instance with the writer's host id is checked by pid, any other by its heartbeats.
    (9, "instances", "host_id", "TEXT"),
    (9, "writer_lease", "host_id", "TEXT"),
    # When the writer last received anything of the instance (a message or a heartbeat), on
    # the writer's wall clock. For people: the writer judges silence on its monotonic clock.
    (9, "instances", "last_heard_at", "TIMESTAMP"),
    # The writer's clock minus the instance's, in microseconds, from its heartbeats (the
    # smallest of the last few differences: delays only add to one). NULL: never measured.
    (9, "instances", "clock_skew_us", "INTEGER"),
)

UPGRADE_STEPS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _SEED_STATEMENTS),
    (2, _LAYER_STATEMENTS),
    (3, _COUNTER_STATEMENTS),
    (4, _VIEW_STATEMENTS),
    (5, _TASK_LOG_STATEMENTS),
    (6, _RETENTION_STATEMENTS),
    (7, ()),  # columns only (COLUMN_ADDITIONS)
    (8, ()),  # columns only
    (9, ()),  # columns only
)
"""(version, statements): applying every step above a file's version brings it up to date."""


def upgrade_statements(current_version: int) -> list[str]:
    """Return the statements that bring a file at `current_version` (0: empty) up to date.

    Every statement is idempotent (IF NOT EXISTS), so a file whose version row is missing
    but whose tables exist, as the seed's might be, upgrades safely too.
    """
    statements: list[str] = []
    for version, step in UPGRADE_STEPS:
        if version > current_version:
            statements.extend(step)
    return statements


def column_additions(current_version: int) -> list[tuple[str, str, str]]:
    """(table, column, declaration) of every column added after `current_version`."""
    return [
        (table, column, decl)
        for version, table, column, decl in COLUMN_ADDITIONS
        if version > current_version
    ]


SEED_TABLE_NAMES = frozenset((*SEED_TABLES, "schema_version"))
LAYER_TABLE_NAMES = frozenset(
    {"writer_lease", "instances", "dead_letters", "counters", "task_log_lines", "prune_jobs"}
)


def foreign_tables(table_names: set[str] | frozenset[str]) -> list[str]:
    """The tables in `table_names` that are neither the seed's, nor this layer's, nor SQLite's own."""
    known = SEED_TABLE_NAMES | LAYER_TABLE_NAMES
    return sorted(name for name in table_names if name not in known and not name.startswith("sqlite_"))


def version_row_statement() -> str:
    """The statement that records SCHEMA_VERSION in schema_version (ISO text, not SQLite's)."""
    return "INSERT OR REPLACE INTO schema_version (version, applied_at) VALUES (?, ?)"
