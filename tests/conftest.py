"""Helpers for process-level tests: real writer processes, real client processes, real files.

Every process a test starts is killed at teardown; every wait has a deadline.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest_postgres import postgres_server, postgres_url  # noqa: F401 - the PostgreSQL fixtures
from netns import netns_pair  # noqa: F401 - two network namespaces joined by a veth pair

from see_persistence import Reader, locations
from see_persistence.client.transport import tcp_endpoints_from_lease
from see_persistence.commands.writer import STALE_LIMIT_ENV
from see_persistence.connection import TRANSPORT_ENV_VAR, TcpEndpoints
from see_persistence.keys import KEYS_DIR_ENV_VAR, KeyStore
from see_persistence.writer.lease import LEASE_STALE_AFTER_S, LOCKED_OUT_KILL_AFTER_S

# Qt tests draw offscreen: the platform is chosen when the QApplication is made, after this.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _qt_importable() -> bool:
    try:
        importlib.import_module("PySide6.QtWidgets")
        importlib.import_module("pytestqt")
    except ImportError:
        return False
    return True


# pytest-qt's plugin fails the whole session when it cannot import Qt (a pytest.UsageError, or an
# ImportError for a missing system library), so pyproject's addopts keeps it from loading on its
# own and it is loaded here only where Qt imports; without it the Qt test skips, the rest runs.
pytest_plugins = ["pytestqt.plugin"] if _qt_importable() else []

HERE = Path(__file__).parent
CLIENT_SCRIPT = HERE / "client_process.py"
READY_TIMEOUT_S = 20.0
# The lease's timings for the writers of a test that waits for a holder to go stale (the
# `fast_lease` fixture): the same proportions as writer/lease.py's, in less than half the time.
FAST_LEASE_STALE_S = 2.0
FAST_LOCKED_OUT_KILL_S = FAST_LEASE_STALE_S * LOCKED_OUT_KILL_AFTER_S / LEASE_STALE_AFTER_S


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def hello_op() -> tuple[str, dict]:
    """A hello naming the test process, to open a raw instance's first message: the writer
    applies nothing of an instance it has not been introduced to."""
    from see_persistence import leases

    me = leases.current_process()
    return (
        "hello",
        {
            "pid": me.pid,
            "process_create_time": me.create_time,
            "host": me.host,
            "at_us": time.time_ns() // 1000,
        },
    )


def old_workflow_ops(wid: str, status: str, at_us: int) -> list[tuple[str, dict]]:
    """The operations of a workflow recorded long ago, with one task and one audit event."""
    return [
        ("create_workflow", {"id": wid, "workflow_name": wid, "metadata": "{}", "at_us": at_us}),
        ("update_workflow_status", {"id": wid, "status": status, "error_message": None, "at_us": at_us}),
        (
            "create_task",
            {"id": f"{wid}-t", "workflow_id": wid, "task_name": "t", "execution_order": 1, "at_us": at_us},
        ),
        (
            "audit_event",
            {
                "id": f"{wid}-e",
                "event_type": "x",
                "message": "m",
                "workflow_id": wid,
                "task_id": None,
                "data": "{}",
                "at_us": at_us,
            },
        ),
    ]


def wait_holding_lease(
    db: Path | str,
    process: subprocess.Popen[bytes],
    log: Callable[[], str],
    timeout: float = READY_TIMEOUT_S,
    *,
    listening: bool = False,
) -> None:
    """Wait until the writer `process` holds the lease of `db` (and, if `listening`, has recorded
    its endpoints, which a writer on TCP does just after taking it); fail with its log if it exits."""
    reader = Reader(db)

    def holding() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"writer exited with {process.returncode}:\n{log()}")
        try:
            status = reader.get_writer_status()
        except reader.read_errors:  # no file yet; on PostgreSQL, no schema yet
            return False
        if status is None or not status.alive or status.pid != process.pid:
            return False
        return not listening or bool(status.endpoints)

    try:
        wait_until(holding, timeout, f"writer pid {process.pid} to hold the lease")
    finally:
        reader.close()


class WriterProcess:
    """A `see-persistence writer` subprocess and its log."""

    def __init__(
        self,
        db: Path | str,
        log_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        listening: bool = False,
    ):
        self.db = db
        self.log_path = log_path
        # Whether it is ready only once the lease names its endpoints (a writer on TCP).
        self.listening = listening
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # `prefix` runs it through another command that execs it (`ip netns exec NS`): the pid stays its own.
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "see_persistence",
                "--log-level",
                "DEBUG",
                "writer",
                "--db",
                str(db),
                *extra,
            ],
            stdout=self._log,
            stderr=self._log,
            env=env,
        )
        self.pid = self.process.pid

    def log(self) -> str:
        """Everything the writer logged so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_holding_lease(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until this process holds the lease (and so has bound its sockets)."""
        wait_holding_lease(self.db, self.process, self.log, timeout, listening=self.listening)

    def signal(self, signum: int) -> None:
        """Send a signal to the writer."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the writer to exit; return its code."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill the writer if it still runs, and close its log."""
        if self.process.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=10)
        self._log.close()


class ClientProcess:
    """tests/client_process.py in a subprocess: records, reports JSON lines on stdout."""

    def __init__(
        self, db: Path | str, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ):
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(CLIENT_SCRIPT), "--db", str(db), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def read_event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line the client prints (it prints one per phase)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"client pid {self.pid} printed nothing for {timeout} s") from None
        if not line:
            self.process.wait(timeout=10)
            err = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"client pid {self.pid} ended without output:\n{err}")
        return json.loads(line)  # type: ignore[no-any-return]

    def proceed(self) -> None:
        """Let a client that waits on stdin go on."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the client to exit 0 and return its final report."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        err = self.process.stderr.read() if self.process.stderr else ""
        assert code == 0, f"client exited {code}:\n{err}"
        lines = []
        while not self._lines.empty():
            lines.append(self._lines.get())
        last = [line for line in lines if line.strip()][-1]
        return json.loads(last)  # type: ignore[no-any-return]

    def kill(self) -> None:
        """SIGKILL the client if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class UnitTestStartedAProcess(AssertionError):
    """A test marked `unit` tried to start a process."""


def _refuse_process(what: str) -> Callable[..., Any]:
    def refuse(*args: object, **kwargs: object) -> Any:
        raise UnitTestStartedAProcess(
            f"a test marked unit starts no process, and this one called {what}: start it in a"
            " test without the mark (make test-unit must stay a quick loop)"
        )

    return refuse


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a test marked `unit`: every way this process could start another one fails the test."""
    if request.node.get_closest_marker("unit") is None:
        return
    import multiprocessing.util

    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse_process("subprocess.Popen"))
    monkeypatch.setattr(multiprocessing.util, "spawnv_passfds", _refuse_process("a multiprocessing spawn"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse_process(f"os.{name}"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database path in a fresh owner-only directory (the file does not exist yet)."""
    directory = tmp_path / "data"
    directory.mkdir(mode=0o700)
    return directory / "workflows.db"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short path, not yet made, for a test's own $SEE_PERSISTENCE_RUNTIME_DIR.

    Not under tmp_path: pytest-xdist adds a directory per worker there, and a socket path
    past ~107 bytes is refused before what the test means to show.
    """
    parent = Path(tempfile.mkdtemp(prefix="sp-"))
    yield parent / "sockets"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def fast_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writer this test starts presumes a silent holder dead after FAST_LEASE_STALE_S."""
    monkeypatch.setenv(STALE_LIMIT_ENV, str(FAST_LEASE_STALE_S))


@pytest.fixture
def writers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., WriterProcess]]:
    """Start writer processes: `writers(db, "--standby")`; all are killed at teardown.

    In a test that asks for `transport` (or `database`), every writer listens on it.
    """
    started: list[WriterProcess] = []
    transport: Transport | None = (
        request.getfixturevalue("transport") if "transport" in request.fixturenames else None
    )

    def start(
        db: Path | str, *extra: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> WriterProcess:
        args = (*transport.writer_args, *extra) if transport is not None else extra
        writer = WriterProcess(
            db,
            tmp_path / f"writer-{len(started)}.log",
            *args,
            env=env,
            prefix=prefix,
            listening=transport is not None and transport.name == "tcp",
        )
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., ClientProcess]]:
    """Start client processes: `clients(db, "--workflows", "5")`; all are killed at teardown."""
    started: list[ClientProcess] = []

    def start(
        db: Path | str, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> ClientProcess:
        client = ClientProcess(db, *args, env=env, prefix=prefix)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


# -- the transports and backends the end-to-end tests run over (issues 16 and 17) ---------------
#
# A test opts in by asking for one fixture:
#   `transport`  -> it runs twice, over ipc and over TCP with CURVE (SQLite);
#   `database`   -> it runs over sqlite-ipc, sqlite-tcp and postgresql-tcp (the PostgreSQL
#                   writer listens on TCP only), or over the ones `@pytest.mark.over(...)` names.
# Either way every writer the `writers` fixture starts listens on that transport, and every
# process the test starts (clients, spawned writers, the test's own Client and Reader) finds
# the writer there: the transport's environment is the test process's own for the test.

TCP_LISTEN = ("--listen", "tcp://127.0.0.1:0")
DEPLOYMENTS: dict[str, tuple[str, str]] = {
    "sqlite-ipc": ("ipc", "sqlite"),
    "sqlite-tcp": ("tcp", "sqlite"),
    "postgresql-tcp": ("tcp", "postgresql"),
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that narrows a `database` test to some deployments."""
    config.addinivalue_line(
        "markers",
        "over(*deployments): run a test that asks for `database` only over these of "
        + ", ".join(DEPLOYMENTS),
    )


# The modules that take longest on one worker (5-80 s each: `pytest --durations=0` summed per
# module, 6 workers on a quiet 2-core machine), longest first; the many shorter ones follow in
# collection order. `make test` hands out whole modules in that order (--dist loadscope
# --no-loadscope-reorder), longest first, so that what is handed out last is short and the
# workers finish together instead of one running a long module alone at the end. A name missing
# here or a module grown longer costs only time.
LONGEST_MODULES = (
    "test_bench.py",
    "test_pipeline.py",
    "test_fencing.py",
    "test_migrate.py",
    "test_netns.py",
    "test_remote_instances.py",
    "test_chaos.py",
    "test_prune_long.py",
    "test_migrate_resume.py",
    "test_postgresql_cli.py",
    "test_protocol_codec.py",
    "test_postgresql_writer_feed.py",
    "test_tcp_transport.py",
    "test_postgresql_writer.py",
    "test_cli_prune.py",
    "test_writer_idle_exit.py",
    "test_bench_postgresql.py",
    "test_clocks.py",
    "test_cli_errors.py",
    "test_protocol_operations.py",
    "test_file_identity.py",
    "test_watch.py",
    "test_cli_commands.py",
    "test_protocol_binding.py",
    "test_cli_live.py",
    "test_schema_upgrade_wait.py",
    "test_postgresql_writer_instances.py",
    "test_postgresql_reader.py",
    "test_other_writers.py",
    "test_forged_messages.py",
    "test_watch_slow_subscriber.py",
    "test_postgresql_writer_counters.py",
    "test_cli_backup_restore.py",
    "test_socket_directory.py",
    "test_watch_tcp.py",
    "test_reader_rows.py",
    "test_postgresql_client.py",
    "test_client_lifecycle.py",
    "test_bad_input.py",
    "test_postgresql_writer_prune.py",
    "test_notices_need_the_file.py",
    "test_client.py",
    "test_commit_seq.py",
    "test_keys.py",
    "test_supervision.py",
    "test_task_logs.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests of LONGEST_MODULES first, in that order; the rest keep theirs."""
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the tests that ask for `database` or `transport` (see above)."""
    if "database" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("over")
        names = list(marker.args) if marker is not None else list(DEPLOYMENTS)
        unknown = [name for name in names if name not in DEPLOYMENTS]
        if unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: no deployment named {unknown}")
        metafunc.parametrize(
            ("transport", "database"), [DEPLOYMENTS[name] for name in names], ids=names, indirect=True
        )
    elif "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", ["ipc", "tcp"], indirect=True)


@dataclass(frozen=True)
class Transport:
    """How the processes of a test reach the writer: "ipc" (the sockets derived from the
    database path) or "tcp" (loopback with CURVE, endpoints and key read from the lease row)."""

    name: str
    writer_args: tuple[str, ...]
    env: dict[str, str]

    def endpoints(self, db: Path | str) -> tuple[str, str, TcpEndpoints | None]:
        """(PULL, PUB, the TCP endpoints or None) of the writer serving `db` now."""
        if self.name == "ipc":
            assert isinstance(db, Path), "ipc is derived from a database file"
            found = locations.endpoints_for(db)
            return found.pull, found.pub, None
        reader = Reader(db)
        try:
            tcp = wait_until(lambda: tcp_endpoints_from_lease(reader), 20, "the lease to name TCP endpoints")
        finally:
            reader.close()
        return tcp.pull, tcp.pub, tcp

    def connect(self, context: zmq.Context[Any], kind: int, db: Path | str) -> zmq.Socket[Any]:
        """A raw socket of `kind` (PUSH or SUB) connected to the writer of `db` as a client is:
        over TCP with CURVE and this user's client key (allowed: same user, same machine)."""
        pull, pub, tcp = self.endpoints(db)
        sock = context.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)
        if tcp is not None:
            mine = KeyStore().client_pair()
            sock.setsockopt(zmq.CURVE_SERVERKEY, tcp.server_key.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, mine.public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, mine.secret.encode())
        sock.connect(pull if kind == zmq.PUSH else pub)
        return sock


@pytest.fixture
def transport(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Transport:
    """The transport of this run of the test (parametrized by pytest_generate_tests)."""
    name: str = request.param
    if name == "tcp":
        # Writers and clients share this key directory: the client key made on first use is
        # allowed, as for one user on one machine.
        monkeypatch.setenv(KEYS_DIR_ENV_VAR, str(tmp_path / "keys"))
        monkeypatch.setenv(TRANSPORT_ENV_VAR, "tcp")
        return Transport(name, TCP_LISTEN, dict(os.environ))
    monkeypatch.delenv(TRANSPORT_ENV_VAR, raising=False)
    return Transport(name, (), dict(os.environ))


@dataclass
class Database:
    """The database of an end-to-end test: an SQLite file (`db` a Path) or a PostgreSQL URL
    (`db` a str), which writers(), clients(), Client() and Reader() all take as it is."""

    backend: str
    db: Path | str
    transport: Transport
    _reader: Reader | None = field(default=None, repr=False)

    @property
    def sqlite(self) -> bool:
        """Whether the database is an SQLite file."""
        return self.backend == "sqlite"

    @property
    def reader(self) -> Reader:
        """One Reader of the database for the test (closed at teardown: on PostgreSQL a pool)."""
        if self._reader is None:
            self._reader = Reader(self.db)
        return self._reader

    def counts(self) -> dict[str, int]:
        """Row counts of the layer's tables."""
        return self.reader.count_rows()

    def close(self) -> None:
        """Close the test's Reader, if it made one."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


@pytest.fixture
def database(request: pytest.FixtureRequest, transport: Transport, db: Path) -> Iterator[Database]:
    """The database of this run of the test: the `db` file, or a new PostgreSQL database."""
    backend: str = request.param
    target: Path | str = db if backend == "sqlite" else request.getfixturevalue("postgres_url")
    found = Database(backend, target, transport)
    try:
        yield found
    finally:
        found.close()
