"""Time-ordered UUID text (the UUIDv7 layout of RFC 9562), built from values the caller supplies."""

from __future__ import annotations

_MAX_MS = (1 << 48) - 1


def format_uuid7(unix_ms: int, counter12: int, random62: int) -> str:
    """Return the canonical UUID text of a version-7 UUID.

    `counter12` fills the 12 bits after the version (a sub-millisecond counter keeps ids from
    one generator strictly increasing); `random62` fills the bits after the variant.
    """
    value = (
        ((unix_ms & _MAX_MS) << 80)
        | (0x7 << 76)
        | ((counter12 & 0xFFF) << 64)
        | (0b10 << 62)
        | (random62 & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
