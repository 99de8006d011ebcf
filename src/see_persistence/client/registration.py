"""What a GUI instance says to register: its process, and the secret its messages carry."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..leases import ProcessIdentity, host_id


def new_secret() -> str:
    """A fresh instance secret: only messages carrying it are the instance's (see codec)."""
    return secrets.token_hex(16)


def hello_payload(identity: ProcessIdentity, token: str) -> dict[str, Any]:
    """The payload of the hello that registers an instance of the process `identity`."""
    return {
        "pid": identity.pid,
        "process_create_time": identity.create_time,
        "host": identity.host,
        "at_us": time.time_ns() // 1000,
        "token": token,
        "host_id": host_id(),
    }
