"""Only the owner reaches the socket (guarantee 9; issue 11, item 6).

Another local user may create the socket directory first, or bind the writer's names in it:
the Client checks the directory as the writer does and sends it nothing. The writer listens
in /run/user/<uid>/see-persistence where the system made /run/user/<uid> this user's own, and
in /tmp/see-persistence-<uid>; the tests that need those real paths run the writer in a mount
namespace of its own (unshare -m), with directories of the test bind-mounted over them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from cli_support import assert_one_line_error, cli
from conftest import CLIENT_SCRIPT, wait_holding_lease, wait_until

from see_persistence import locations
from see_persistence.client.transport import ZmqTransport

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making files of another uid needs root")


@pytest.fixture
def runtime(socket_dir, monkeypatch) -> Path:
    """The socket directory's path for this test, alike for this process and its children."""
    path = socket_dir
    monkeypatch.setenv(locations.RUNTIME_DIR_ENV_VAR, str(path))
    return path


def test_the_session_directory_is_used_only_when_it_is_ours_and_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv(locations.RUNTIME_DIR_ENV_VAR, raising=False)
    fallback = Path(f"/tmp/see-persistence-{os.getuid()}")
    root = tmp_path / "run-user"
    root.mkdir()
    assert locations.runtime_dirs(root) == [fallback]  # no /run/user/<uid>: no session
    session = root / str(os.getuid())
    session.mkdir(mode=0o700)
    assert locations.runtime_dirs(root) == [session / "see-persistence", fallback]
    session.chmod(0o755)
    assert locations.runtime_dirs(root) == [fallback]
    if os.geteuid() == 0:
        session.chmod(0o700)
        os.chown(session, NOBODY, NOBODY)
        assert locations.runtime_dirs(root) == [fallback]
    monkeypatch.setenv(locations.RUNTIME_DIR_ENV_VAR, str(tmp_path / "mine"))
    assert locations.runtime_dirs(root) == [tmp_path / "mine"]  # the override, alone


def _squat(runtime: Path, owner: int, mode: int) -> None:
    runtime.mkdir()
    runtime.chmod(mode)
    os.chown(runtime, owner, owner)


_CLIENT = """
import json, sys
from see_persistence import Client
try:
    client = Client(sys.argv[1])
except PermissionError as exc:
    print(json.dumps({"refused": str(exc)}))
    raise SystemExit(0)
for n in range(52):
    client.create_workflow(f"secret-{n}", metadata={"customer": "acme"})
print(json.dumps({"flushed": client.flush(2.0), "closed": client.close(1.0)}))
"""


@needs_root
@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(NOBODY, 0o777, f"belongs to uid {NOBODY}"), (0, 0o755, "has mode 755")],
    ids=["another-users-777", "ours-755"],
)
def test_a_client_sends_nothing_into_a_socket_directory_that_is_not_only_ours(db, runtime, owner, mode, why):
    _squat(runtime, owner, mode)
    endpoints = locations.endpoints_for(db)
    context = zmq.Context()
    squatter = context.socket(zmq.PULL)
    squatter.bind(endpoints.pull)
    notices = context.socket(zmq.PUB)
    notices.bind(endpoints.pub)
    for path in endpoints.paths():
        os.chown(path, owner, owner)
    try:
        with pytest.raises(PermissionError, match=why) as refused:
            locations.checked_endpoints(db)
        assert str(runtime) in str(refused.value)
        with pytest.raises(PermissionError, match=why):
            ZmqTransport(context, endpoints, "an-instance")
        client = subprocess.run(
            [sys.executable, "-c", _CLIENT, str(db)], capture_output=True, text=True, timeout=60
        )
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout.strip().splitlines()[-1])
        assert report.get("flushed") is not True
        assert not squatter.poll(500)  # nothing reached the squatter's socket
        # ... which works: what is sent to it arrives.
        probe = context.socket(zmq.PUSH)
        probe.connect(endpoints.pull)
        probe.send(b"probe")
        assert squatter.poll(5000) and squatter.recv() == b"probe"
        probe.close(linger=0)
    finally:
        squatter.close(linger=0)
        notices.close(linger=0)
        context.term()


@needs_root
def test_the_client_constructor_refuses_a_squatted_socket_directory_at_once(db, runtime):
    _squat(runtime, NOBODY, 0o777)
    client = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(db)], capture_output=True, text=True, timeout=60
    )
    report = json.loads(client.stdout.strip().splitlines()[-1])
    assert f"socket directory {runtime} belongs to uid {NOBODY}" in report.get("refused", "")


def test_a_missing_socket_directory_is_made_owner_only_by_the_first_client(db, runtime):
    endpoints = locations.checked_endpoints(db)
    assert endpoints.directory == runtime
    assert runtime.is_dir() and (runtime.stat().st_mode & 0o777) == 0o700


@needs_root
def test_a_socket_file_of_another_user_is_refused_by_client_and_writer(tmp_path, db, runtime):
    locations.ensure_private_directory(runtime)
    endpoints = locations.endpoints_for(db)
    context = zmq.Context()
    stranger = context.socket(zmq.PULL)
    stranger.bind(endpoints.pull)
    os.chown(endpoints.paths()[0], NOBODY, NOBODY)
    try:
        with pytest.raises(PermissionError, match=f"belongs to uid {NOBODY}"):
            locations.checked_endpoints(db)
        result = cli("writer", "--db", db)
        assert_one_line_error(result, 1, str(endpoints.paths()[0]), f"belongs to uid {NOBODY}")
    finally:
        stranger.close(linger=0)
        context.term()


@needs_root
def test_the_transport_stops_using_a_directory_someone_else_made_again(db, runtime):
    context = zmq.Context()
    transport = ZmqTransport(context, locations.checked_endpoints(db), "an-instance")
    try:
        assert transport.connected and transport.verify() is False
        shutil.rmtree(runtime)  # a /tmp cleaner; then another user is quicker than our writer
        _squat(runtime, NOBODY, 0o777)
        with pytest.raises(PermissionError, match=f"belongs to uid {NOBODY}"):
            transport.verify()
        assert not transport.connected and transport.send(b"x") is False
        os.chown(runtime, os.getuid(), os.getgid())
        runtime.chmod(0o700)
        assert transport.verify() is True  # ours again: connected anew
        assert transport.connected and transport.verify() is False
    finally:
        transport.close(linger_ms=0)
        context.term()


# -- the writer in both directories, in a mount namespace of its own ---------------------------------


class NamespacedWriter:
    """A writer that sees `session_root` as /run/user and `fallback` as /tmp/see-persistence-<uid>."""

    def __init__(self, db: Path, session_root: Path, fallback: Path, log_path: Path) -> None:
        self.db = db
        self.log_path = log_path
        real_fallback = Path(f"/tmp/see-persistence-{os.getuid()}")
        locations.ensure_private_directory(real_fallback)  # the mount point must exist
        env = {key: value for key, value in os.environ.items() if key != locations.RUNTIME_DIR_ENV_VAR}
        script = 'mount --bind "$1" /run/user && mount --bind "$2" "$3" && shift 3 && exec "$@"'
        mounts = [
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "sh",
            str(session_root),
            str(fallback),
            str(real_fallback),
        ]
        command = [sys.executable, "-m", "see_persistence", "--log-level", "DEBUG", "writer", "--db", str(db)]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*mounts, *command],
                stdout=log,
                stderr=log,
                env=env,
            )

    def log(self) -> str:
        """What the writer logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_holding_lease(self) -> None:
        """Wait until it serves."""
        wait_holding_lease(self.db, self.process, self.log)

    def client(self, label: str) -> dict[str, object]:
        """Run a client in the writer's mount namespace to its end; its final report."""
        env = {key: value for key, value in os.environ.items() if key != locations.RUNTIME_DIR_ENV_VAR}
        enter = ["nsenter", f"--mount=/proc/{self.process.pid}/ns/mnt"]
        args = ["--db", str(self.db), "--label", label, "--workflows", "2", "--flush-timeout", "20"]
        result = subprocess.run(
            [*enter, sys.executable, str(CLIENT_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def namespaced(tmp_path) -> Iterator[tuple[Path, Path, Callable[[Path], NamespacedWriter]]]:
    """(session root, fallback, start(db)): the directories to see as /run/user and the fallback."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root, unshare and nsenter")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    session_root = tmp_path / "run-user"
    session_root.mkdir()
    fallback = tmp_path / "fallback"
    fallback.mkdir(mode=0o700)
    started: list[NamespacedWriter] = []

    def start(db: Path) -> NamespacedWriter:
        writer = NamespacedWriter(db, session_root, fallback, tmp_path / f"writer-{len(started)}.log")
        started.append(writer)
        return writer

    yield session_root, fallback, start
    for writer in started:
        writer.stop()


def _bound(directory: Path, db: Path) -> bool:
    name = locations.socket_name(db)
    return (directory / f"{name}.pull").exists() and (directory / f"{name}.pub").exists()


def test_the_writer_listens_in_the_session_directory_and_the_fallback(db, namespaced):
    session_root, fallback, start = namespaced
    session = session_root / str(os.getuid())
    session.mkdir(mode=0o700)
    writer = start(db)
    writer.wait_holding_lease()
    wait_until(lambda: _bound(session / "see-persistence", db) and _bound(fallback, db), 10, "both bindings")
    assert writer.client("gui")["flushed"] is True  # through /run/user/<uid>/see-persistence


def test_a_squatted_fallback_does_not_stop_a_writer_with_a_session_directory(db, namespaced):
    session_root, fallback, start = namespaced
    (session_root / str(os.getuid())).mkdir(mode=0o700)
    fallback.chmod(0o777)
    os.chown(fallback, NOBODY, NOBODY)
    writer = start(db)
    writer.wait_holding_lease()
    wait_until(lambda: _bound(session_root / str(os.getuid()) / "see-persistence", db), 10, "the binding")
    assert "not listening in /tmp/see-persistence-" in writer.log()
    assert f"belongs to uid {NOBODY}" in writer.log()
    assert not any(fallback.iterdir())
    assert writer.client("gui")["flushed"] is True


def test_a_session_directory_that_appears_after_the_start_is_listened_in_too(db, namespaced):
    session_root, fallback, start = namespaced
    writer = start(db)
    writer.wait_holding_lease()
    wait_until(lambda: _bound(fallback, db), 10, "the writer to bind in the fallback")
    session = session_root / str(os.getuid())
    session.mkdir(mode=0o700)  # the user logs in after a supervisor started the writer
    wait_until(
        lambda: _bound(session / "see-persistence", db), 10, "the writer to bind in the session directory"
    )
    assert writer.client("gui")["flushed"] is True
