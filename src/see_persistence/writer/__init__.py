"""The writer actor: lease election and takeover, the PULL loop, batching, dead letters,
the instance liveness sweep and clean shutdown."""

from .service import Writer

__all__ = ["Writer"]
