"""The chaos/soak runner behind tools/chaos.py, one job a module.

The script tools/chaos.py is the entry point; it runs `cli.main`. The modules, in the order a run
uses them:

- `cli`: the command line, its defaults, and the choice between the supervisor and a client role.
- `run`: one supervised run from a fresh database to the printed report.
- `supervisor`: starts the writers, the standby and the clients, and keeps the load going.
- `processes`: every child process of the run, started so that none outlives it.
- `observe`: what the supervisor sees of the writers from outside (the lease, the write lock).
- `faults`: SIGKILL or SIGSTOP of the active writer, and what followed.
- `client`: the client role, one GUI-like process that records and remembers what it asked for.
- `rundir`: the files the supervisor and its clients exchange (go, ready, manifests).
- `sampling`: the WAL, the file, the writer's RSS and its published counters, over time.
- `checker`, `pruning`: a soak checks each client as it exits and prunes what was checked.
- `verification`: the database against the manifests: lost, doubled, extra, changed records.
- `figures`: the numbers of the report (waits, commits, WAL, RSS, the series).
- `report`: the report as JSON-able data and as one screen of text.

The package lives beside the script, not in see_persistence: it is found through tools/ on
sys.path, as are tools/other_writer.py and tools/wal_index.py, which it imports.
"""
