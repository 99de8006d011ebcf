"""One GUI-like process of the demo, to run by hand beside a writer.

see-persistence writer --db /tmp/demo/workflows.db &
python tools/demo_gui.py --db /tmp/demo/workflows.db --name gui1 --workflows 4
see-persistence status --db /tmp/demo/workflows.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

from see_persistence.demo import gui_process


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--name", default="gui")
    parser.add_argument("--workflows", type=int, default=4)
    args = parser.parse_args()
    print(gui_process(args.db, args.name, args.workflows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
