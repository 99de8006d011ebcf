"""Chaos/soak runner: proves guarantees 4-6 (atomic batches, nothing lost or doubled, one writer).

    python tools/chaos.py --clients 4 --seconds 30 --kill-every 2 [--db PATH] [--seed N]
                          [--stop-fraction 0.25] [--other-interval 0.05] [--run-dir DIR] [--json]
    python tools/chaos.py --soak [--minutes 60] [--clients 4] [--client-seconds 60]
                          [--kill-every 240] [--max-db-mb 8192] [--run-dir DIR] [--json]

It creates a fresh database, starts a writer and a standby writer, and N GUI-like client
processes that record workflows, tasks, task log lines and audit events as fast as they can,
each with contents derived from (client label, counter). Meanwhile it kills the active writer
with SIGKILL every ~--kill-every seconds, or (with probability --stop-fraction) freezes it
with SIGSTOP until it is presumed dead, then resumes it and expects it to exit with code 4.
After every takeover it starts a new standby, as a supervisor would. At the end it stops the
writer with SIGTERM and checks the database against what every client asked for.

With --other-interval (on by default in a soak) another program writes the same file directly
(tools/other_writer.py: plain sqlite3, busy timeout 30 s, one workflow every 50 ms); its rows
are checked too, and its write waits and errors reported. Throughout, a sampler notes the
WAL's size, the active writer's RSS and the counters the writer publishes (its longest batch
commit of each second), reported over time.

--soak keeps the writer saturated for --minutes: each client records for about
--client-seconds and is replaced as soon as it stops recording, so the load never pauses. Each
client's records are checked as soon as it has exited (so memory and manifests stay bounded),
and once the file passes --max-db-mb the records already checked are pruned through
`Client.prune` (the product's own retention), so an hour at saturation fits on the disk.

Exit code 0 only if nothing was lost, duplicated or extra, every status is the last one asked
for, the integrity check is ok, no dead letters, every stopped writer exited with code 4, and
the other program (if it ran) saw no error.
Run with --help for every option. Logs, manifests and the database stay in the run directory.
This script is the entry point (for a run, and for each client role it starts); the package
tools/chaoslib/ does the work, one job a module (its __init__ lists them).
"""

from __future__ import annotations

import sys
from pathlib import Path

# chaoslib, other_writer.py and wal_index.py sit beside this script, outside see_persistence: this
# directory must be on sys.path whether the script is run or loaded from a file by a test.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaoslib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
