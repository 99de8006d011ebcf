"""The writer actor: lease election and takeover, the PULL loop, batching, dead letters,
the instance liveness sweep and clean shutdown."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Writer


def __getattr__(name: str) -> Any:
    # Writer loads on first use: the commands that use a part of this package (check reads
    # the schema rules in writer/storage.py) need none of zmq and the loop that come with it.
    if name == "Writer":
        from .service import Writer

        return Writer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Writer"})


__all__ = ["Writer"]
