"""`python -m see_persistence` is the `see-persistence` command."""

from .cli import main

raise SystemExit(main())
