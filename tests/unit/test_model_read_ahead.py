"""ModelReadAhead on its own: what a take returns, errors after text, the pending cap, and
that leaving the block closes the model stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.domain.errors import ModelUnavailable
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta


async def test_text_that_arrived_while_the_turn_was_busy_is_one_take_then_the_response() -> None:
    all_read = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        for word in ("a ", "b ", "c"):
            yield TextDelta(word)
        all_read.set()
        yield ModelResponse("a b c")

    async with ModelReadAhead(model()) as ahead:
        await all_read.wait()  # the turn is busy elsewhere while the model's text arrives
        assert await ahead.next() == TextDelta("a b c")
        assert await ahead.next() == ModelResponse("a b c")
        assert await ahead.next() is None


async def test_a_delta_for_a_waiting_turn_is_handed_over_before_the_burst_behind_it() -> None:
    produced = 0

    async def model() -> AsyncGenerator[ModelEvent, None]:
        nonlocal produced
        for word in ("first ", "second ", "third"):
            produced += 1
            yield TextDelta(word)  # no wait in between: one network read held all three
        yield ModelResponse("first second third")

    async with ModelReadAhead(model()) as ahead:
        assert await ahead.next() == TextDelta("first ")
        assert produced == 1  # the first token did not wait for the rest to be parsed
        assert await ahead.next() == TextDelta("second ")
        assert await ahead.next() == TextDelta("third")


async def test_a_take_does_not_wait_for_more_than_what_is_there() -> None:
    more = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        yield TextDelta("first ")
        await more.wait()
        yield TextDelta("second")
        yield ModelResponse("first second")

    async with ModelReadAhead(model()) as ahead:
        assert await ahead.next() == TextDelta("first ")
        more.set()
        assert await ahead.next() == TextDelta("second")
        assert await ahead.next() == ModelResponse("first second")


async def test_a_failure_is_raised_after_the_text_read_before_it() -> None:
    async def model() -> AsyncGenerator[ModelEvent, None]:
        yield TextDelta("half ")
        yield TextDelta("an answer")
        raise ModelUnavailable("connection lost", reason="MODEL_STREAM_INTERRUPTED")

    taken: list[str] = []
    async with ModelReadAhead(model()) as ahead:
        with pytest.raises(ModelUnavailable):
            while isinstance(event := await ahead.next(), TextDelta):
                taken.append(event.text)
    assert "".join(taken) == "half an answer"


async def test_the_reader_stops_when_the_pending_text_reaches_the_cap() -> None:
    produced = 0
    cap_reached = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        nonlocal produced
        for _ in range(10):
            produced += 1
            if produced == 2:
                cap_reached.set()
            yield TextDelta("ab")
        yield ModelResponse("ab" * 10)

    async with ModelReadAhead(model(), max_pending_chars=4) as ahead:
        await cap_reached.wait()  # the turn is busy while the reader fills up to the cap
        assert await ahead.next() == TextDelta("abab")
        assert produced == 2  # stopped at the cap until the turn took the text
        taken = "abab"
        while isinstance(event := await ahead.next(), TextDelta):
            assert len(event.text) <= 4
            taken += event.text
        assert taken == "ab" * 10
        assert event == ModelResponse("ab" * 10)


async def test_leaving_the_block_closes_the_model_stream() -> None:
    closed = asyncio.Event()
    never = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        try:
            yield TextDelta("partial ")
            await never.wait()
            yield ModelResponse("never")
        finally:
            closed.set()

    async with ModelReadAhead(model()) as ahead:
        assert await ahead.next() == TextDelta("partial ")
    assert closed.is_set()
