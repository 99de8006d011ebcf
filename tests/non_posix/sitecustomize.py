"""Started before anything else in a process whose PYTHONPATH begins with this directory.

It takes away what Windows lacks and Linux has, so that the TCP path is run here the way a
machine without them runs it: no uid/euid, no fork, no clock_gettime (so no CLOCK_BOOTTIME),
no SIGHUP/SIGKILL, no fcntl, and a libzmq without ipc. A simulation on Linux, not Windows:
it proves the code takes no POSIX-only call on this path, not that Windows runs it.
"""

import os
import signal
import sys
import time

for module, names in (
    (os, ("getuid", "geteuid", "register_at_fork", "fork")),
    (time, ("clock_gettime_ns", "clock_gettime", "CLOCK_BOOTTIME")),
    (signal, ("SIGHUP", "SIGKILL")),
):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
sys.modules["fcntl"] = None  # type: ignore[assignment]  # "import fcntl" raises ImportError

import zmq  # noqa: E402 - after the removals, as an application would import it

_real_has = zmq.has
zmq.has = lambda capability: capability != "ipc" and _real_has(capability)
