"""How a client reaches a writer over TCP: endpoints, the writer's key, connection strings.

A writer listening on TCP binds two ports, PULL (operations) and PUB (commit notices), both
CURVE servers with the writer's key pair. A fixed `--listen tcp://HOST:N` binds PULL on N and
PUB on N + 1; port 0 binds both on free ports. Either way the lease row records the ports
actually bound and the writer's public key, and a connection string carries all three:

    tcp://HOST:PULL_PORT;pub=tcp://HOST:PUB_PORT;key=WRITER_PUBLIC_KEY_Z85

(Z85 has no ';', so the string splits safely.) A bare `tcp://HOST:N` with the key given
apart means PUB on N + 1, the fixed-port convention.

ipc stays the default transport where libzmq has it; elsewhere (pyzmq wheels built without
ipc) TCP on the loopback with CURVE. $SEE_PERSISTENCE_TRANSPORT=tcp chooses TCP anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import zmq

from .keys import parse_public_key

TRANSPORT_ENV_VAR = "SEE_PERSISTENCE_TRANSPORT"
IPC = "ipc"
TCP = "tcp"
DEFAULT_TCP_LISTEN = "tcp://127.0.0.1:0"

_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/;\s]+):(?P<port>\d+|\*)$")


def default_transport() -> str:
    """'ipc' where libzmq has it, else 'tcp'; $SEE_PERSISTENCE_TRANSPORT (ipc or tcp) overrides."""
    chosen = os.environ.get(TRANSPORT_ENV_VAR, "").strip().lower()
    if chosen in (IPC, TCP):
        return chosen
    if chosen:
        raise ValueError(f"${TRANSPORT_ENV_VAR} must be 'ipc' or 'tcp', not {chosen!r}")
    return IPC if zmq.has("ipc") else TCP


def default_listen() -> list[str]:
    """What a writer listens on when not told: the ipc sockets, or TCP on a free loopback port."""
    return [IPC] if default_transport() == IPC else [DEFAULT_TCP_LISTEN]


def split_tcp_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of `tcp://HOST:PORT`; raises ValueError naming the endpoint otherwise ('*' is 0)."""
    match = _TCP_ENDPOINT.match(endpoint.strip())
    if match is None:
        raise ValueError(f"not a TCP endpoint (tcp://HOST:PORT): {endpoint!r}")
    port_text = match.group("port")
    port = 0 if port_text == "*" else int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {endpoint!r}")
    return match.group("host"), port


def pub_endpoint_for(pull: str) -> str:
    """The PUB endpoint a writer binds beside PULL `pull`: port + 1, or a free port for port 0."""
    host, port = split_tcp_endpoint(pull)
    if port == 65535:
        raise ValueError(f"{pull!r}: the commit notices need the next port too")
    return f"tcp://{host}:{port + 1 if port else 0}"


@dataclass(frozen=True)
class TcpEndpoints:
    """A writer's two TCP endpoints and its public key: all a client needs to reach it."""

    pull: str
    pub: str
    server_key: str

    def connection_string(self) -> str:
        """`tcp://HOST:PORT;pub=tcp://HOST:PORT;key=KEY`, what parse_connection reads back."""
        return f"{self.pull};pub={self.pub};key={self.server_key}"


def parse_connection(text: str, server_key: str | None = None) -> TcpEndpoints:
    """A connection string, or a bare `tcp://HOST:PORT` with `server_key`; ValueError saying why not."""
    parts = [part.strip() for part in text.strip().split(";") if part.strip()]
    if not parts:
        raise ValueError("empty connection string")
    pull = parts[0]
    split_tcp_endpoint(pull)
    pub: str | None = None
    key = server_key
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if not sep or name not in ("pub", "key"):
            raise ValueError(f"unknown part {part!r} in connection string {text!r} (pub=..., key=...)")
        if name == "pub":
            split_tcp_endpoint(value)
            pub = value
        elif server_key is not None and value != server_key:
            raise ValueError("the connection string's key differs from the server_key given")
        else:
            key = value
    if key is None:
        raise ValueError(
            f"no writer key for {pull}: give a connection string with ';key=...' "
            "('see-persistence keys show' prints it) or server_key"
        )
    if pub is None:
        pub = pub_endpoint_for(pull)
    if split_tcp_endpoint(pull)[1] == 0 or split_tcp_endpoint(pub)[1] == 0:
        raise ValueError(f"{text!r}: a client needs the ports the writer bound, not port 0")
    return TcpEndpoints(pull=pull, pub=pub, server_key=parse_public_key(key))
