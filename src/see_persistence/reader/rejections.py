"""The Reader's view of the dead-letter table: the operations the writer refused, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from . import paging
from .columns import optional_time
from .connection import ReadConnection

if TYPE_CHECKING:
    from ..protocol.models import Rejection

# Newest first; by instance through idx_see_dead_letters_instance (instance_id, id).
_REJECTIONS = (
    "SELECT id, received_at, instance_id, seq, reason, raw FROM dead_letters{} ORDER BY id DESC"
    + paging.PAGE_SQL
)
_SQL_REJECTIONS = _REJECTIONS.format("")
_SQL_REJECTIONS_OF_INSTANCE = _REJECTIONS.format(" WHERE instance_id = ?")


def _operation_name(raw: object) -> str | None:
    """The name in `raw` if it is one msgpack [name: str, payload] operation, else None.

    The writer stores a rejected operation that way; a rejected whole message (a 4-item
    array) or bytes that are not msgpack at all give None, and nothing here raises.
    """
    if type(raw) is not bytes:
        return None
    unpacker = msgpack.Unpacker(raw=False)
    try:
        unpacker.feed(raw)
        if unpacker.read_array_header() != 2:
            return None
        name = unpacker.unpack()
        unpacker.skip()  # the payload: checked to be complete, never built
    except Exception:  # the unpacker raises several types for malformed bytes
        return None
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return name if type(name) is str else None  # exactly two items, nothing after them
    except Exception:
        return None
    return None  # bytes after the operation: not one the writer stored


def _rejection(row: tuple[Any, ...]) -> Rejection:
    from ..protocol.models import Rejection  # here: the models load on a Reader's first record (columns.py)

    return Rejection(
        id=row[0],
        received_at=optional_time(row[1]),
        instance_id=row[2],
        seq=row[3],
        operation=_operation_name(row[5]),
        reason=row[4],
    )


class RejectionQueries(ReadConnection):
    """Dead letters: get_rejections."""

    def get_rejections(
        self, instance_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Rejection]:
        """Operations the writer refused (dead letters), newest first, optionally of one instance.

        `operation` is the refused operation's name, or None when the row holds a whole
        message or bytes that are not one operation. A file without `dead_letters` (made by
        the Rust core) has none.
        """
        page = (paging.count(limit, "limit"), paging.count(offset, "offset"))
        if not self._has("dead_letters"):
            return []
        if instance_id is None:
            found = self._fetch(_SQL_REJECTIONS, page)
        else:
            found = self._fetch(_SQL_REJECTIONS_OF_INSTANCE, (instance_id, *page))
        return [_rejection(r) for r in found]
