"""Read-only queries over a mode=ro connection; never imports the writer."""

from .queries import Reader

__all__ = ["Reader"]
