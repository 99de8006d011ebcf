"""tools/bench.py as a package: the benchmark of see-persistence beside its baselines.

One module per job, each readable on its own:

- cli.py: the command line (`python tools/bench.py ...` calls `cli.main`; roles.py, the processes
  a run starts as `--role ...`); runner.py runs the
  sections in order, or one alone; report.py prints them as markdown (write_tables.py: the
  write sections' tables and targets).
- The write tables: workloads.py (the operation streams), system.py and backends.py (what is
  compared: baseline_naive.py, ours.py; a new backend is one more module listed in backends.py),
  ceiling.py (SQLite's own limit), gui.py (the GUI process role), phases.py (a phase in a group
  of GUI processes, send -> visible), processes.py (children, the writer, samplers),
  databases.py (the files), floors.py (the machine's own call floor).
- The other sections, each measured, printed and judged in its own module:
  other_writer_section.py, feed.py (live views), reads.py; reads_postgresql.py (the same reads on
  PostgreSQL, run only alone: `--only reads-postgresql`).
- Shared by all: settings.py, figures.py (what is measured), formatting.py, targets.py,
  results.py.
"""
