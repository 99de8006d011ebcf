"""A second host for real: two network namespaces joined by a veth pair, made and removed per test.

    server namespace (writer)                 client namespace (GUIs)
    lo + SERVER_IF 10.231.X.1/24  <== veth ==>  CLIENT_IF 10.231.X.2/24 + lo

Only the network is apart: the filesystem, the pids and the host name are shared, so the
clients find the writer through the lease row of the same database file, and the test
process signals and reads every process as usual. Path-based ipc sockets would cross the
namespaces (they are files), so the processes here must be told to use TCP.

Making namespaces needs Linux, the `ip` command (iproute2) and CAP_NET_ADMIN (root). Where
that fails the tests that ask for the `netns_pair` fixture skip with one line saying why;
with SEE_PERSISTENCE_REQUIRE_NETNS=1 (CI runs as root and sets it) they fail instead.

Names carry the pytest-xdist worker, the pid and a counter, so workers never collide; the
namespaces are deleted at teardown whatever the test did (with them go the veth ends and
anything a test left running inside), and namespaces of ours whose pytest process is gone
(a run killed before its teardown) are swept at the next setup.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import psutil
import pytest

REQUIRE_ENV_VAR = "SEE_PERSISTENCE_REQUIRE_NETNS"
NAME_PREFIX = "spnet"
SERVER_IF = "sp-srv"  # interface names live inside the namespaces: fixed names cannot collide
CLIENT_IF = "sp-cli"
IP_TIMEOUT_S = 20.0
_OURS = re.compile(rf"^{NAME_PREFIX}-(?P<worker>\w+)-(?P<pid>\d+)-\d+-[ab]$")
_counter = itertools.count()


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (says why)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; NetnsUnavailable with its error output if it fails and `check`."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except FileNotFoundError:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed") from None
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def _worker() -> tuple[str, int]:
    """This pytest-xdist worker's name and number (gw3 -> 3); ('main', 0) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    digits = "".join(ch for ch in name if ch.isdigit())
    return re.sub(r"\W", "", name) or "main", int(digits) if digits else 0


@dataclass(frozen=True)
class NetnsPair:
    """Two namespaces and the addresses of each end; run commands in either, cut the link."""

    server_ns: str
    client_ns: str
    server_ip: str
    client_ip: str

    def in_server(self) -> list[str]:
        """The prefix that runs a command in the server's namespace (it execs it: same pid)."""
        return ["ip", "netns", "exec", self.server_ns]

    def in_client(self) -> list[str]:
        """The prefix that runs a command in the clients' namespace (it execs it: same pid)."""
        return ["ip", "netns", "exec", self.client_ns]

    def run(self, namespace: str, *command: str) -> subprocess.CompletedProcess[str]:
        """Run `command` inside `namespace` to its end; its output, whatever its exit code."""
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *command], capture_output=True, text=True, timeout=IP_TIMEOUT_S
        )

    def set_link(self, up: bool) -> None:
        """Bring the clients' end of the veth down (the link is cut both ways) or up again."""
        _ip("-n", self.client_ns, "link", "set", CLIENT_IF, "up" if up else "down")

    def link_is_up(self) -> bool:
        """Whether the clients' end of the link carries traffic (both ends up)."""
        shown = _ip("-n", self.client_ns, "-o", "link", "show", CLIENT_IF).stdout
        return "LOWER_UP" in shown and ",UP" in shown

    def listen(self, port: int = 0) -> str:
        """The `--listen` endpoint of a writer in the server's namespace."""
        return f"tcp://{self.server_ip}:{port}"


def _sweep_stale() -> None:
    """Delete namespaces of ours whose pytest process no longer runs (a run killed mid-test)."""
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _OURS.match(name)
        if match and not psutil.pid_exists(int(match.group("pid"))):
            _delete(name)


def _delete(namespace: str) -> None:
    """Kill what still runs in `namespace` (only processes a test of ours started there), then delete it."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            psutil.Process(int(pid)).kill()
        except (psutil.Error, ValueError):
            pass
    _ip("netns", "delete", namespace, check=False)


def make_pair() -> NetnsPair:
    """Make two namespaces joined by a veth pair, addressed and up; NetnsUnavailable if it cannot."""
    if not sys.platform.startswith("linux"):
        raise NetnsUnavailable(f"network namespaces are Linux only (this is {sys.platform})")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed")
    worker, number = _worker()
    serial = next(_counter)
    base = f"{NAME_PREFIX}-{worker}-{os.getpid()}-{serial}"
    subnet = f"10.231.{(number * 31 + os.getpid() + serial) % 250 + 1}"
    pair = NetnsPair(f"{base}-a", f"{base}-b", f"{subnet}.1", f"{subnet}.2")
    _sweep_stale()
    made: list[str] = []
    try:
        for namespace in (pair.server_ns, pair.client_ns):
            _ip("netns", "add", namespace)
            made.append(namespace)
        # Made inside the server's namespace, its peer straight in the clients': the names never
        # exist in the root namespace, where another worker's might.
        _ip(
            "-n", pair.server_ns, "link", "add", SERVER_IF, "type", "veth",
            "peer", "name", CLIENT_IF, "netns", pair.client_ns,
        )  # fmt: skip
        for namespace, interface, address in (
            (pair.server_ns, SERVER_IF, pair.server_ip),
            (pair.client_ns, CLIENT_IF, pair.client_ip),
        ):
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
            _ip("-n", namespace, "link", "set", interface, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
    except NetnsUnavailable:
        for namespace in made:
            _delete(namespace)
        raise
    return pair


def remove_pair(pair: NetnsPair) -> None:
    """Delete both namespaces (and so the veth pair), killing anything left running inside."""
    for namespace in (pair.client_ns, pair.server_ns):
        _delete(namespace)


def _unavailable(reason: str) -> NoReturn:
    message = f"network namespace tests need root and iproute2: {reason}"
    if os.environ.get(REQUIRE_ENV_VAR, "") not in ("", "0"):
        pytest.fail(f"{message} (and {REQUIRE_ENV_VAR} is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two namespaces joined by a veth pair for this test; removed at teardown whatever happened.

    Ask for it before `writers` and `clients`, so that their processes are stopped first.
    """
    try:
        pair = make_pair()
    except NetnsUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield pair
    finally:
        remove_pair(pair)
