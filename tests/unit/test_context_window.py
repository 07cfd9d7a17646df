"""The token-aware context window: what of the history the model is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.application.context_window import (
    CUT_ARGUMENTS_KEY,
    ContextBudget,
    ContextWindow,
    fit_context_window,
    raw_message_tokens,
    raw_tokens,
    raw_tools_tokens,
)
from agent_runtime.application.token_calibration import MAX_RATIO, TokenCalibration
from agent_runtime.domain.model import Message, Role, ToolCallRecord
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition, declared_tool

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class History:
    """A valid history, built message by message (every call answered by the next message)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, role: Role, content: str, **fields: object) -> Message:
        position = len(self.messages) + 1
        message = Message(f"m{position}", "s", position, role, content, NOW, **fields)  # type: ignore[arg-type]
        self.messages.append(message)
        return message

    def user(self, content: str = "question") -> Message:
        return self.add(Role.USER, content)

    def answer(self, content: str = "answer") -> Message:
        return self.add(Role.ASSISTANT, content)

    def call(self, result: str = "result", arguments: dict[str, object] | None = None) -> None:
        call_id = f"call_{len(self.messages) + 1}"
        call = ToolCallRecord(call_id, "read_file", arguments or {"path": "a.py"})
        self.add(Role.ASSISTANT, "", tool_calls=(call,))
        self.add(Role.TOOL, result, tool_call_id=call_id)


def positions(window: ContextWindow) -> list[int]:
    return [m.position for m in window.messages]


def test_the_message_count_still_bounds_the_window_and_a_result_never_leads() -> None:
    history = History()
    history.user()
    history.call()  # 2, 3
    history.call()  # 4, 5
    history.answer()  # 6
    history.user()  # 7

    def fitted(max_messages: int) -> list[int]:
        return positions(fit_context_window(history.messages, ContextBudget(100_000, max_messages)))

    assert fitted(3) == [6, 7]  # 5 without its call (4) is not sent
    assert fitted(4) == [4, 5, 6, 7]
    assert fitted(6) == [2, 3, 4, 5, 6, 7]
    assert positions(fit_context_window(history.messages, ContextBudget(100_000))) == list(
        range(1, 8)
    )


def test_the_oldest_go_first_until_the_estimate_fits_and_a_call_goes_with_its_result() -> None:
    history = History()
    history.user("x" * 400)  # 1: ~104 tokens
    history.call("y" * 400)  # 2, 3
    history.answer("short")  # 4
    history.user("now")  # 5
    costs = [raw_message_tokens(m) for m in history.messages]
    newest = sum(costs[3:])

    budget = ContextBudget(max_tokens=newest + costs[2], max_tool_result_share=1.0)

    window = fit_context_window(history.messages, budget)

    # 3 would fit with the room left, but not without its call (2): both went.
    assert positions(window) == [4, 5]
    assert window.raw_tokens == newest


def test_the_system_prompt_and_tools_take_their_share_of_the_budget() -> None:
    history = History()
    history.user("a" * 400)
    history.answer("b" * 400)
    history.user("c")
    budget = ContextBudget(max_tokens=sum(raw_message_tokens(m) for m in history.messages))

    assert positions(fit_context_window(history.messages, budget)) == [1, 2, 3]
    assert positions(fit_context_window(history.messages, budget, fixed_raw_tokens=50)) == [2, 3]


def test_the_calibration_ratio_scales_the_estimate() -> None:
    history = History()
    history.user("a" * 400)
    history.answer("b" * 400)
    history.user("c")
    budget = ContextBudget(max_tokens=sum(raw_message_tokens(m) for m in history.messages))

    # The model counts twice what we estimate: half of it fits.
    assert positions(fit_context_window(history.messages, budget, ratio=2.0)) == [3]


def test_a_large_tool_result_is_cut_in_the_middle_with_a_marker_and_stored_whole() -> None:
    history = History()
    history.user("read it")
    result = "HEAD" + "x" * 40_000 + "TAIL"
    history.call(result)
    stored = history.messages[2]

    window = fit_context_window(
        history.messages, ContextBudget(max_tokens=8_000, max_tool_result_share=0.25)
    )

    sent = window.messages[2]
    assert sent.message_id == stored.message_id
    assert sent.content.startswith("HEAD") and sent.content.endswith("TAIL")
    assert "characters cut from the middle by the runtime" in sent.content
    assert raw_message_tokens(sent) <= 2_000
    assert stored.content == result  # what is stored stays whole


def test_what_must_stay_is_cut_when_nothing_else_can_go() -> None:
    history = History()
    history.user("old")
    history.user("Q" + "q" * 20_000)  # the newest user message alone is over the budget
    history.call("r" * 500, arguments={"content": "w" * 20_000})

    window = fit_context_window(history.messages, ContextBudget(max_tokens=2_000))

    assert positions(window) == [2, 3, 4]
    assert window.raw_tokens <= 2_000
    assert window.messages[0].content.startswith("Qq")
    call = window.messages[1].tool_calls[0]
    assert "characters cut" in str(call.arguments["content"])


def arguments_shaped(shape: str, text: str) -> dict[str, object]:
    """Tool-call arguments holding `text`: as one string argument, nested in lists and
    objects, spread over more string arguments than a message's texts are cut, or as numbers
    (no text at all)."""
    if shape == "nested":
        return {"edits": [{"path": f"f{i}.py", "content": text} for i in range(4)]}
    if shape == "spread":
        return {f"part{i}": text for i in range(12)}
    if shape == "numbers":
        return {"lines": list(range(len(text)))}
    return {"path": "a", "content": text}


@pytest.mark.parametrize("shape", ["top", "nested", "spread", "numbers"])
def test_a_tool_call_that_must_stay_is_cut_to_the_budget_whatever_its_arguments(
    shape: str,
) -> None:
    history = History()
    history.user("edit these files")
    history.call("done", arguments=arguments_shaped(shape, "x" * 40_000))

    window = fit_context_window(history.messages, ContextBudget(max_tokens=2_000))

    assert positions(window) == [1, 2, 3]
    assert 1_500 < window.raw_tokens <= 2_000  # cut to the budget, not beyond it
    (call,) = window.messages[1].tool_calls
    if shape in ("nested", "numbers"):  # no text to cut: the arguments' JSON is, as a whole
        assert list(call.arguments) == [CUT_ARGUMENTS_KEY]
        cut = str(call.arguments[CUT_ARGUMENTS_KEY])
        assert cut.startswith(json.dumps(arguments_shaped(shape, "x" * 40_000))[:20])
        assert "characters cut from the middle by the runtime" in cut
    assert history.messages[1].tool_calls[0].arguments == arguments_shaped(shape, "x" * 40_000)


def test_a_call_with_nothing_to_cut_is_left_as_it_is_when_even_the_floors_do_not_fit() -> None:
    history = History()
    history.user("Q" * 20_000)
    history.call("r", arguments={"line": 5})

    window = fit_context_window(history.messages, ContextBudget(max_tokens=10))

    assert positions(window) == [1, 2, 3]  # what must stay, at its floor
    assert window.messages[1].tool_calls[0].arguments == {"line": 5}
    assert window.raw_tokens < 100


def test_the_calibration_follows_what_the_model_reports_per_session() -> None:
    calibration = TokenCalibration(max_sessions=2)
    assert calibration.ratio("t", "s1") == 1.0

    calibration.observe("t", "s1", raw_estimate=1000, reported=1500)
    calibration.observe("t", "s2", raw_estimate=1000, reported=0)  # no usage: nothing learnt

    assert calibration.ratio("t", "s1") == 1.5
    assert calibration.ratio("t", "s2") == 1.0
    assert calibration.ratio("other-tenant", "s1") == 1.0
    calibration.observe("t", "s1", raw_estimate=1000, reported=2500)
    assert calibration.ratio("t", "s1") == 2.0  # halfway to the newest observation
    calibration.observe("t", "s1", raw_estimate=10, reported=10_000)
    assert calibration.ratio("t", "s1") <= MAX_RATIO  # a wild count is clamped
    calibration.observe("t", "s3", 100, 100)
    calibration.observe("t", "s4", 100, 300)
    assert calibration.ratio("t", "s1") == 1.0  # the least recently used was forgotten


def test_a_non_ascii_text_is_estimated_by_its_utf8_bytes() -> None:
    assert raw_tokens("abcd") == 1
    assert raw_tokens("日本語") == 3  # 9 bytes


def _computed_tools_tokens(tools: list[ToolDefinition]) -> int:
    return sum(
        raw_tokens(tool.name)
        + raw_tokens(tool.description)
        + raw_tokens(json.dumps(tool.parameters))
        for tool in tools
    )


def test_the_built_in_tools_cached_estimate_is_the_computed_one() -> None:
    builtin = list(TOOL_CATALOGUE.values())
    assert raw_tools_tokens(builtin) == _computed_tools_tokens(builtin) > 0


def test_a_tool_that_is_not_the_catalogue_s_own_is_counted_as_it_is() -> None:
    # A client's tool under a built-in tool's name, with a larger schema: not the cached count.
    name = next(iter(TOOL_CATALOGUE))
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(50)}}
    tools = [declared_tool(name, "mine", big), declared_tool("other", "", {})]
    assert raw_tools_tokens(tools) == _computed_tools_tokens(tools)
    assert raw_tools_tokens(tools[:1]) > raw_tools_tokens([TOOL_CATALOGUE[name]])


# -- the property ----------------------------------------------------------------------------

_TEXT = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=0, max_value=30_000).map(lambda n: "z" * n),
    st.integers(min_value=0, max_value=3_000).map(lambda n: "é文" * n),
)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["user", "answer", "call"]),
        _TEXT,
        _TEXT,
        st.sampled_from(["top", "nested", "spread", "numbers"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=_STEPS,
    # From where even the most that must stay (the newest user message and up to 50 messages
    # after it, each cut to its floor) fits, at the worst ratio, with the fixed part.
    max_tokens=st.integers(min_value=30_000, max_value=200_000),
    max_messages=st.integers(min_value=0, max_value=60),
    share=st.floats(min_value=0.05, max_value=1.0),
    ratio=st.floats(min_value=0.25, max_value=4.0),
    fixed=st.integers(min_value=0, max_value=500),
)
def test_any_history_fits_keeps_the_newest_user_message_and_pairs_every_call(
    steps: list[tuple[str, str, str, str]],
    max_tokens: int,
    max_messages: int,
    share: float,
    ratio: float,
    fixed: int,
) -> None:
    history = History()
    for kind, text, other, shape in steps:
        if kind == "user":
            history.user(text)
        elif kind == "answer":
            history.answer(text)
        else:
            # Spread over 12 arguments (or nested 4 times), a text of 3,000 is enough.
            cut = other[:3_000] if shape in ("spread", "nested") else other
            history.call(text, arguments=arguments_shaped(shape, cut))
    budget = ContextBudget(max_tokens, max_messages, share)

    window = fit_context_window(history.messages, budget, fixed_raw_tokens=fixed, ratio=ratio)

    sent = window.messages
    # It fits the budget (in calibrated tokens, with the fixed part).
    assert window.raw_tokens == sum(raw_message_tokens(m) for m in sent)
    assert (window.raw_tokens + fixed) * ratio <= max_tokens * (1 + 1e-9)
    # The newest user message is kept (if the message-count window holds it).
    counted = history.messages[-max_messages:] if max_messages else history.messages
    users = [m for m in counted if m.role is Role.USER]
    if users:
        assert users[-1].message_id in {m.message_id for m in sent}
    # Every call is followed by its result, every result preceded by its call.
    for index, message in enumerate(sent):
        if message.tool_calls:
            assert index + 1 < len(sent)
            assert sent[index + 1].tool_call_id == message.tool_calls[0].call_id
        if message.role is Role.TOOL:
            assert index > 0 and sent[index - 1].tool_calls
            assert sent[index - 1].tool_calls[0].call_id == message.tool_call_id
    # Oldest first, as stored: a subsequence of the history.
    order = [m.position for m in sent]
    assert order == sorted(order)
