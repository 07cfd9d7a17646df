"""ModelReadAhead on its own: what a take returns, errors after text, the pending cap, and
that leaving the block closes the model stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.domain.errors import ModelUnavailable
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    ReasoningText,
    TextDelta,
    ToolCallFragment,
)


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


async def test_reasoning_text_and_tool_arguments_are_gathered_by_kind_in_order() -> None:
    all_read = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        yield ReasoningText("let me ")
        yield ReasoningText("think")
        yield TextDelta("I will ")
        yield TextDelta("read it.")
        yield ToolCallFragment("c1", "read_file", '{"path"')
        yield ToolCallFragment("c1", "read_file", ': "a"}')
        all_read.set()
        yield ModelResponse("I will read it.")

    async with ModelReadAhead(model()) as ahead:
        await all_read.wait()  # all of it arrived while the turn was busy
        assert await ahead.next() == ReasoningText("let me think")
        assert await ahead.next() == TextDelta("I will read it.")
        assert await ahead.next() == ToolCallFragment("c1", "read_file", '{"path": "a"}')
        assert await ahead.next() == ModelResponse("I will read it.")


async def test_fragments_of_different_calls_are_not_joined() -> None:
    all_read = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        yield ToolCallFragment("c1", "read_file", "{}")
        yield ToolCallFragment("c2", "read_file", "{}")
        all_read.set()
        yield ModelResponse("")

    async with ModelReadAhead(model()) as ahead:
        await all_read.wait()
        assert await ahead.next() == ToolCallFragment("c1", "read_file", "{}")
        assert await ahead.next() == ToolCallFragment("c2", "read_file", "{}")


async def test_the_pending_cap_counts_every_kind_of_output() -> None:
    produced = 0
    cap_reached = asyncio.Event()

    async def model() -> AsyncGenerator[ModelEvent, None]:
        nonlocal produced
        for kind in (ReasoningText, TextDelta) * 5:
            produced += 1
            if produced == 2:
                cap_reached.set()
            yield kind("ab")
        yield ModelResponse("ab" * 5)

    async with ModelReadAhead(model(), max_pending_chars=4) as ahead:
        await cap_reached.wait()  # the turn is busy while the reader fills up to the cap
        assert produced == 2  # reasoning and text together reached it: the reader waits
        assert await ahead.next() == ReasoningText("ab")
        assert await ahead.next() == TextDelta("ab")
        kinds = []
        while not isinstance(event := await ahead.next(), ModelResponse):
            assert event is not None
            kinds.append(type(event))
        assert kinds == [ReasoningText, TextDelta] * 4
