"""The SSE parser must give the same events however the bytes are split."""

from __future__ import annotations

import pytest

from agent_runtime.infrastructure.llm.sse import SSEEvent, SSEEventTooLarge, SSEParser

# Every rule at once: comments, event/id fields, multi-line data, one space stripped (not two),
# \r\n, \n and lone \r endings, an event without data (not dispatched), a field without a colon,
# multi-byte UTF-8 (2, 3 and 4 bytes), ignored fields, and the id persisting across events.
STREAM = (
    b": a comment\r\n"
    b"event: greeting\r\n"
    b"id: 1\r\n"
    b"data: h\xc3\xa9llo\r\n"
    b"data:  two spaces\r\n"
    b"\r\n"
    b"data:no-space\n"
    b"\n"
    b"event: no-data-so-never-dispatched\r"
    b"\r"
    b"data: \xe2\x82\xac and \xf0\x9f\x98\x80\r"
    b"data\r"
    b"\r"
    b"id: 2\n"
    b"retry: 100\n"
    b"unknown: x\n"
    b": another comment\n"
    b"data: last\r\n"
    b"\r\n"
)
EXPECTED = [
    SSEEvent("greeting", "h\u00e9llo\n two spaces", "1"),
    SSEEvent("message", "no-space", "1"),
    SSEEvent("message", "\u20ac and \U0001f600\n", "1"),
    SSEEvent("message", "last", "2"),
]


def parse(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush()


def test_whole_stream() -> None:
    assert parse(STREAM) == EXPECTED


def test_byte_by_byte() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_split_at_every_pair_of_offsets() -> None:
    for first in range(len(STREAM) + 1):
        for second in range(first, len(STREAM) + 1):
            pieces = STREAM[:first], STREAM[first:second], STREAM[second:]
            assert parse(*pieces) == EXPECTED, (first, second)


def test_event_is_dispatched_as_soon_as_its_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "a", None)]
    # A lone \r ends the line at once, without waiting to see whether \n follows.
    assert parser.feed(b"data: b\r\r") == [SSEEvent("message", "b", None)]


def test_cr_at_end_of_feed_then_lf_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # Were the \n taken as a second (blank) line, "a" would be dispatched alone here.
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [SSEEvent("message", "a\nb", None)]


def test_cr_lf_pairing_survives_a_feed_that_decodes_to_nothing() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [SSEEvent("message", "a", None)]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert parse(b"data: one\ndata: two\ndata:\ndata: four\n\n") == [
        SSEEvent("message", "one\ntwo\n\nfour", None)
    ]


def test_empty_data_line_is_still_an_event_but_no_data_line_is_not() -> None:
    assert parse(b"data:\n\nevent: x\n\n: only a comment\n\n") == [SSEEvent("message", "", None)]


def test_comments_only() -> None:
    assert parse(b": keep-alive\n\n: again\r\n\r\n") == []


def test_event_type_resets_after_dispatch() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [
        SSEEvent("a", "1", None),
        SSEEvent("message", "2", None),
    ]


def test_id_with_nul_is_ignored() -> None:
    assert parse(b"id: 7\n\nid: x\x00y\ndata: d\n\n") == [SSEEvent("message", "d", "7")]


def test_value_keeps_everything_after_the_first_colon() -> None:
    assert parse(b'data: {"a": "b:c"}\n\n') == [SSEEvent("message", '{"a": "b:c"}', None)]


@pytest.mark.parametrize("split", range(1, 4))
def test_multibyte_character_split_across_feeds(split: int) -> None:
    encoded = "data: \U0001f600\n\n".encode()
    cut = len(b"data: ") + split
    parser = SSEParser()
    assert parser.feed(encoded[:cut]) == []
    assert parser.feed(encoded[cut:]) == [SSEEvent("message", "\U0001f600", None)]


def test_leading_bom_is_dropped_even_when_split() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEEvent("message", "x", None)]


def test_flush_dispatches_an_event_without_final_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [SSEEvent("message", "a", None)]
    assert parser.flush() == [SSEEvent("message", "b", None)]
    assert parser.flush() == []


def test_flush_takes_an_unterminated_last_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.flush() == [SSEEvent("message", "[DONE]", None)]


def test_flush_without_data_dispatches_nothing() -> None:
    parser = SSEParser()
    parser.feed(b"event: x\nid: 3\n")
    assert parser.flush() == []


def test_flush_replaces_a_truncated_character() -> None:
    parser = SSEParser()
    parser.feed(b"data: \xe2\x82")
    assert parser.flush() == [SSEEvent("message", "\ufffd", None)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse(b"data: a\xffb\n\n") == [SSEEvent("message", "a\ufffdb", None)]


def test_parser_is_usable_after_flush() -> None:
    parser = SSEParser()
    parser.feed(b"data: a")
    assert parser.flush() == [SSEEvent("message", "a", None)]
    assert parser.feed(b"data: b\n\n") == [SSEEvent("message", "b", None)]


def test_a_line_never_ended_stops_at_the_limit() -> None:
    # Without a limit the buffer grew without bound (one turn added ~190 MB).
    parser = SSEParser(max_chars=100)
    assert parser.feed(b"data: " + b"x" * 90) == []
    with pytest.raises(SSEEventTooLarge, match="longer than 100 characters"):
        parser.feed(b"x" * 10)


def test_a_long_line_ended_in_the_same_feed_is_refused_too() -> None:
    parser = SSEParser(max_chars=100)
    with pytest.raises(SSEEventTooLarge):
        parser.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_an_event_of_many_short_data_lines_stops_at_the_limit() -> None:
    parser = SSEParser(max_chars=100)
    assert parser.feed(b"data: 0123456789\n" * 9) == []
    with pytest.raises(SSEEventTooLarge):
        parser.feed(b"data: 0123456789\n")


def test_events_up_to_the_limit_pass_and_the_count_starts_again_for_each() -> None:
    parser = SSEParser(max_chars=100)
    line = b"data: " + b"x" * 90 + b"\n\n"
    assert parser.feed(line * 3) == [SSEEvent("message", "x" * 90, None)] * 3
