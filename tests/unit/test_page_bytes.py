"""Pages that fit in one gRPC message (the server's tests page through large histories)."""

from __future__ import annotations

from agent_runtime.api.page_bytes import fitting, page_bytes
from agent_runtime.api.transport import MIN_MESSAGE_BYTES, Transport
from agent_runtime.v1 import session_pb2 as ses


def message(content_bytes: int) -> ses.Message:
    return ses.Message(message_id="m", content="x" * content_bytes)


def test_a_page_ends_before_its_items_exceed_the_budget() -> None:
    items = [message(400) for _ in range(10)]
    size = items[0].ByteSize() + 8
    assert len(fitting(iter(items), 3 * size)) == 3
    assert len(fitting(iter(items), 3 * size - 1)) == 2
    assert fitting(iter(items), 100 * size) == items


def test_the_first_item_is_kept_whatever_its_size() -> None:
    assert fitting(iter([message(10_000), message(1)]), 100) == [message(10_000)]
    assert fitting(iter([]), 100) == []


def test_the_budget_is_three_quarters_of_the_smaller_limit() -> None:
    assert page_bytes(Transport()) == MIN_MESSAGE_BYTES * 3 // 4
    assert page_bytes(Transport(max_send_message_bytes=64 * 1024)) == 48 * 1024
    # More than clients receive by default does not make pages larger.
    assert page_bytes(Transport(max_send_message_bytes=64 * 2**20)) == MIN_MESSAGE_BYTES * 3 // 4
