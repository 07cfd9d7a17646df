"""Pages that fit in one gRPC message.

page_size counts items, but items have no size bound of their own that adds up to less than
a message: a history of tool calls whose arguments are as large as allowed, say. A page then
ends with the last item that fits within the budget (always one at least), and its token
continues after that item.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import Message

from agent_runtime.api.transport import MIN_MESSAGE_BYTES, Transport

_Proto = TypeVar("_Proto", bound=Message)

# Room for the response's other fields (the page token) and each item's tag and length.
_ITEM_FRAMING_BYTES = 8


def page_bytes(transport: Transport) -> int:
    """The budget of a page's items: 3/4 of the largest message the server sends, and of
    what a client receives by default (gRPC's 4 MiB), whichever is smaller."""
    largest = min(transport.max_send_message_bytes or MIN_MESSAGE_BYTES, MIN_MESSAGE_BYTES)
    return largest * 3 // 4


def fitting(items: Iterable[_Proto], budget: int) -> list[_Proto]:
    """The first items whose encoded sizes add up to at most `budget` (the first one always:
    alone, it fits in a message, as the limits on what is stored make sure)."""
    kept: list[_Proto] = []
    size = 0
    for item in items:
        size += item.ByteSize() + _ITEM_FRAMING_BYTES
        if kept and size > budget:
            break
        kept.append(item)
    return kept
