"""Package attributes loaded on first use (PEP 562), for the package `__init__` modules.

A process pays only for the modules whose names it uses: the writer never loads the record
models, a command only its own module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str,
    modules: Mapping[str, str],
    namespace: dict[str, Any],
    on_load: Callable[[str], None] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A `__getattr__` and `__dir__` for `package` that import each name's module (relative, as
    ".codec") the first time the name is asked for, then keep the name in `namespace`."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        if on_load is not None:
            on_load(name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__
