"""Pages that fit in one gRPC message (the server's tests page through large histories)."""

from __future__ import annotations

from agent_runtime.api.page_bytes import fitted, fitting, page_bytes
from agent_runtime.api.transport import MIN_MESSAGE_BYTES, Transport
from agent_runtime.application.pagination import Page
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


def test_a_page_cut_short_continues_after_its_last_item() -> None:
    sizes = [400, 401, 402, 403, 404]
    page = Page.of([*sizes, 1], 5, lambda size: f"after {size}")  # one more row: more follow
    budget = message(400).ByteSize() + message(401).ByteSize() + 16
    kept, token = fitted(page, message, budget)
    assert kept == [message(400), message(401)]
    assert token == "after 401"
    assert page.first(2).items == [400, 401] and page.first(2).more


def test_a_whole_page_keeps_its_own_token() -> None:
    last = Page.of([1, 2], 5, lambda n: f"after {n}")  # the last page: nothing follows
    assert fitted(last, message, 10_000) == ([message(1), message(2)], "")
    more = Page.of([1, 2, 3], 2, lambda n: f"after {n}")
    assert fitted(more, message, 10_000) == ([message(1), message(2)], "after 2")
    assert Page.of([], 5, str).next_page_token == ""
