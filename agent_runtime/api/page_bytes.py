"""Pages that fit in one gRPC message.

page_size counts items, but items have no size bound of their own that adds up to less than
a message: a history of tool calls whose arguments are as large as allowed, sessions with
instructions as long as allowed, turns whose model names and errors are. A page then ends
with the last item that fits within the budget (always one at least), and its token
continues after that item. Every list RPC's page is cut this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from google.protobuf.message import Message

from agent_runtime.api.transport import MIN_MESSAGE_BYTES, Transport
from agent_runtime.application.pagination import Page

_Proto = TypeVar("_Proto", bound=Message)
_Item = TypeVar("_Item")

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


def fitted(
    page: Page[_Item], to_proto: Callable[[_Item], _Proto], budget: int
) -> tuple[list[_Proto], str]:
    """The page's items as protobuf, as many as fit in `budget`, and the token of the page
    that continues after the last of them."""
    kept = fitting((to_proto(item) for item in page.items), budget)
    return kept, page.first(len(kept)).next_page_token
