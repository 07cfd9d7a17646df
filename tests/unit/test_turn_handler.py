"""TurnHandler with a fake unit of work and a scripted model: the pipeline's rules, fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.metrics import OTHER_MODEL, NoMetrics
from agent_runtime.application.ports import ChatRequest, LLMClient
from agent_runtime.application.turn_handler import TurnHandler
from agent_runtime.application.turn_inputs import (
    SUPERSEDED_TOOL_RESULT,
)
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.errors import (
    InvalidInput,
    ModelRequestRejected,
    ModelUnavailable,
    SessionBusy,
    StorageUnavailable,
)
from agent_runtime.domain.model import Message, Role, StopReason, TurnStatus, Usage, UsageTotals
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    ReasoningText,
    RequestedToolCall,
    TextDelta,
    ToolCallFragment,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.agents_file import parse_agents
from agent_runtime.infrastructure.observability.prometheus import PrometheusMetrics
from agent_runtime.object_graph import build_turns
from tests.fakes import FakeUnitOfWorkFactory, ScriptedModel, _FakeMessages, text_answer


def make_handler(
    model: LLMClient, uows: FakeUnitOfWorkFactory | None = None, **settings: Any
) -> tuple[TurnHandler, FakeUnitOfWorkFactory]:
    uows = uows or FakeUnitOfWorkFactory()
    turns = build_turns(uows, model, default_agents(), TurnSettings(**settings), default_model="m")
    return turns.handler, uows


async def run(handler: TurnHandler, content: str, session: str = "s1") -> list[chunks.Chunk]:
    return [
        c async for c in handler.handle(SendUserMessage(session, content, tenant_id=DEFAULT_TENANT))
    ]


def bodies(stream: list[chunks.Chunk]) -> list[type]:
    return [type(c.body) for c in stream]


async def test_text_turn_streams_and_persists_in_order() -> None:
    handler, uows = make_handler(ScriptedModel(text_answer("hello there")))
    stream = await run(handler, "hi")

    # However the words are grouped into deltas, they come in order, between TurnStarted and
    # the message.
    deltas = [c.body for c in stream if isinstance(c.body, chunks.AssistantDelta)]
    assert bodies(stream) == [
        chunks.TurnStarted,
        *[chunks.AssistantDelta] * len(deltas),
        chunks.AssistantMessage,
        chunks.TurnCompleted,
    ]
    assert "".join(d.text for d in deltas) == "hello there"
    assert [c.seq for c in stream] == list(range(1, len(stream) + 1))
    assert len({c.turn_id for c in stream}) == 1
    db = uows.db
    assert [(m.role, m.content, m.position) for m in db.messages] == [
        (Role.USER, "hi", 1),
        (Role.ASSISTANT, "hello there", 2),
    ]
    assert stream[-2].body == chunks.AssistantMessage(db.messages[1].message_id, "hello there")
    turn = db.turns[stream[0].turn_id]
    assert turn.status is TurnStatus.COMPLETED and turn.stop_reason is StopReason.END_TURN
    assert db.sessions["s1"].running_turn_id is None
    assert db.sessions["s1"].message_count == 2
    assert db.commits == 2
    assert all(u.closed for u in uows.opened)


async def test_user_message_is_committed_before_the_model_is_called() -> None:
    model = ScriptedModel(text_answer("ok"))
    handler, uows = make_handler(model)
    seen: list[list[str]] = []
    model.on_call = lambda _req: seen.append([m.content for m in uows.db.messages])
    await run(handler, "persist me first")
    assert seen == [["persist me first"]]


class HangingModel:
    """Sends one delta, then nothing until closed; counts requests opened and closed."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.requested = asyncio.Event()

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        self.opened += 1
        self.requested.set()
        try:
            yield TextDelta("early ")
            await asyncio.Event().wait()
            yield ModelResponse("never")
        finally:
            self.closed += 1


async def test_a_failed_commit_1_sends_nothing_and_never_calls_the_model() -> None:
    model = HangingModel()
    handler, uows = make_handler(model)
    uows.db.failing_commits[1] = StorageUnavailable("disk full")
    stream = handler.handle(SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT))
    with pytest.raises(StorageUnavailable):  # a status before any chunk
        await anext(stream)
    assert model.opened == 0
    assert uows.db.messages == [] and uows.db.turns == {}


async def test_a_client_gone_while_turn_started_is_sent_cancels_the_turn() -> None:
    model = HangingModel()
    handler, uows = make_handler(model)
    stream = handler.handle(SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT))
    started = await anext(stream)
    assert isinstance(started.body, chunks.TurnStarted)
    assert uows.db.commits == 1
    await stream.aclose()  # what grpc does to the stream when the client goes away
    assert model.opened == 0  # the model is called only once TurnStarted is on its way
    turn = uows.db.turns[started.turn_id]
    assert turn.status is TurnStatus.CANCELLED
    assert uows.db.sessions["s1"].running_turn_id is None


class _CallMetrics(NoMetrics):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def model_call_finished(self, outcome: str, seconds: float) -> None:
        self.calls.append(outcome)


async def test_a_client_gone_mid_answer_closes_the_request_before_recording_the_end() -> None:
    model, metrics = HangingModel(), _CallMetrics()
    uows = FakeUnitOfWorkFactory()
    turns = build_turns(
        uows, model, default_agents(), TurnSettings(), default_model="m", metrics=metrics
    )
    stream = turns.handler.handle(SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT))
    await anext(stream)  # TurnStarted
    delta = await anext(stream)
    assert delta.body == chunks.AssistantDelta("early ")
    open_at_commit: list[int] = []
    uows.db.before_commit = lambda: open_at_commit.append(model.opened - model.closed)
    await stream.aclose()
    assert open_at_commit == [0]  # closed before the cancellation's commit, which may wait
    assert metrics.calls == ["cancelled"]
    kept = [m for m in uows.db.messages if m.incomplete]
    assert [m.content for m in kept] == ["early "]  # the text the client saw is kept


async def test_cancel_turn_mid_answer_closes_the_request_before_the_end_is_sent() -> None:
    model = HangingModel()
    uows = FakeUnitOfWorkFactory()
    turns = build_turns(uows, model, default_agents(), TurnSettings(), default_model="m")
    stream = turns.handler.handle(SendUserMessage("s1", "hi", tenant_id=DEFAULT_TENANT))
    started = await anext(stream)
    await anext(stream)  # the first delta: the request is open
    await turns.canceller.cancel("s1", started.turn_id, tenant_id=DEFAULT_TENANT)  # CancelTurn
    ending = []
    async for chunk in stream:
        ending.append(chunk)
        if isinstance(chunk.body, chunks.TurnCompleted):
            assert model.opened == model.closed == 1  # closed before the end was sent
    assert ending[-1].body == chunks.TurnCompleted(StopReason.CANCELLED, Usage())


async def test_model_sees_system_prompt_history_and_tools() -> None:
    model = ScriptedModel(text_answer("one"), text_answer("two"))
    handler, _ = make_handler(model)
    await run(handler, "first")
    await run(handler, "second")
    request: ChatRequest = model.requests[1]
    assert [(m.role, m.content) for m in request.history] == [
        (Role.USER, "first"),
        (Role.ASSISTANT, "one"),
        (Role.USER, "second"),
    ]
    assert "software engineer" in request.system_prompt
    assert "write_file" in [t.name for t in request.tools]
    assert request.model == "m"


async def test_context_window_bounds_what_the_model_sees() -> None:
    model = ScriptedModel(*[text_answer(f"a{i}") for i in range(4)])
    handler, _ = make_handler(model, context_window_messages=3)
    for i in range(4):
        await run(handler, f"q{i}")
    assert [m.content for m in model.requests[-1].history] == ["q2", "a2", "q3"]


async def test_tool_call_is_committed_before_the_chunk() -> None:
    answer: list[ModelEvent | BaseException] = [
        ModelResponse(
            "",
            (RequestedToolCall("call_9", "write_file", '{"path": "a.py", "content": "x"}'),),
            Usage(3, 4),
        )
    ]
    handler, uows = make_handler(ScriptedModel(answer))
    stream = await run(handler, "write it")

    tool_call = stream[1].body
    assert isinstance(tool_call, chunks.ToolCall)
    assert (tool_call.call_id, tool_call.tool_name, tool_call.requires_approval) == (
        "call_9",
        "write_file",
        True,
    )
    assert tool_call.arguments == {"path": "a.py", "content": "x"}
    stored = uows.db.messages[-1]
    assert stored.message_id == tool_call.message_id
    assert stored.tool_calls[0].call_id == "call_9"
    completed = stream[-1].body
    assert completed == chunks.TurnCompleted(StopReason.AWAITING_APPROVAL, Usage(3, 4))


async def test_model_failure_after_turn_started_keeps_the_input() -> None:
    failing: list[ModelEvent | BaseException] = [
        TextDelta("par"),
        ModelUnavailable("boom", reason="MODEL_HTTP_503"),
    ]
    handler, uows = make_handler(ScriptedModel(failing))
    stream = await run(handler, "keep me")

    assert bodies(stream) == [
        chunks.TurnStarted,
        chunks.AssistantDelta,
        chunks.TurnError,
        chunks.TurnCompleted,
    ]
    error = stream[2].body
    assert isinstance(error, chunks.TurnError)
    assert error.error.reason == "MODEL_HTTP_503" and error.error.retryable
    assert stream[3].body == chunks.TurnCompleted(StopReason.ERROR, Usage())
    # The input, and the text the client saw before the failure, kept as incomplete.
    assert [(m.content, m.incomplete) for m in uows.db.messages] == [
        ("keep me", False),
        ("par", True),
    ]
    turn = uows.db.turns[stream[0].turn_id]
    assert turn.status is TurnStatus.FAILED
    assert turn.error is not None and turn.error.reason == "MODEL_HTTP_503"
    assert uows.db.sessions["s1"].running_turn_id is None


async def test_failed_commit_2_is_reported_and_rolled_back() -> None:
    model = ScriptedModel(text_answer("lost"))
    handler, uows = make_handler(model)
    uows.db.failing_commits[2] = RuntimeError("disk on fire")  # commit #2
    stream = await run(handler, "hi")
    error = stream[-2].body
    assert isinstance(error, chunks.TurnError)
    assert error.error.reason == "INTERNAL"
    assert "disk on fire" not in error.error.message
    # The answer's commit rolled back; the text the client saw is kept, incomplete.
    assert [(m.content, m.incomplete) for m in uows.db.messages] == [
        ("hi", False),
        ("lost", True),
    ]
    assert uows.db.turns[stream[0].turn_id].status is TurnStatus.FAILED


async def test_a_commit_2_that_landed_but_reported_a_failure_stays_the_turns_end() -> None:
    # No delta: the ending has no streamed text to keep, so nothing of it clashes with what
    # landed (a kept text would take the landed answer's position, and fail to be stored).
    model = ScriptedModel([ModelResponse("done", usage=Usage(10, 5))])
    handler, uows = make_handler(model)
    uows.db.unacknowledged_commits[2] = StorageUnavailable("connection reset after COMMIT")
    stream = await run(handler, "hi")

    error = stream[-2].body  # what the client was told: a retry with its key replays the turn
    assert isinstance(error, chunks.TurnError) and error.error.reason == "STORAGE_UNAVAILABLE"
    # What landed stays, counted once: the ending recorded after it wrote nothing.
    turn = uows.db.turns[stream[0].turn_id]
    assert (turn.status, turn.usage) == (TurnStatus.COMPLETED, Usage(10, 5))
    assert uows.db.sessions["s1"].usage == UsageTotals(10, 5, 1)
    assert list(uows.db.usage_days.values()) == [UsageTotals(10, 5, 1)]
    assert [(m.content, m.incomplete) for m in uows.db.messages] == [
        ("hi", False),
        ("done", False),
    ]
    assert bodies(uows.db.chunks[turn.turn_id])[-2:] == [
        chunks.AssistantMessage,
        chunks.TurnCompleted,
    ]


async def test_invalid_tool_call_is_retried_without_reaching_the_client() -> None:
    bad: list[ModelEvent | BaseException] = [
        ModelResponse("", (RequestedToolCall("c", "read_file", "{not json"),))
    ]
    answer = "sorry, here is the answer"
    model = ScriptedModel(bad, [TextDelta(answer), ModelResponse(answer)])
    handler, uows = make_handler(model)
    stream = await run(handler, "read")
    assert bodies(stream) == [
        chunks.TurnStarted,
        chunks.AssistantDelta,
        chunks.AssistantMessage,
        chunks.TurnCompleted,
    ]
    assert stream[1].body == chunks.AssistantDelta("sorry, here is the answer")
    roles = [(m.role, m.tool_call_id, m.is_error) for m in uows.db.messages]
    assert roles == [
        (Role.USER, None, False),
        (Role.ASSISTANT, None, False),
        (Role.TOOL, "c", True),
        (Role.ASSISTANT, None, False),
    ]
    assert "not valid JSON" in uows.db.messages[2].content
    # The model saw its mistake and the runtime's explanation.
    assert [m.role for m in model.requests[1].history] == [Role.USER, Role.ASSISTANT, Role.TOOL]


async def test_iterations_are_capped() -> None:
    bad: list[ModelEvent | BaseException] = [
        ModelResponse("", (RequestedToolCall("c", "no_such_tool", "{}"),))
    ]
    model = ScriptedModel(*[bad] * 3)
    handler, uows = make_handler(model, max_iterations=3)
    stream = await run(handler, "loop")
    assert stream[-1].body == chunks.TurnCompleted(StopReason.MAX_ITERATIONS, Usage())
    assert len(model.requests) == 3
    assert uows.db.sessions["s1"].running_turn_id is None
    assert uows.db.messages[-1].role is Role.TOOL


async def test_busy_session_is_refused_before_turn_started() -> None:
    handler, uows = make_handler(ScriptedModel(text_answer("a"), text_answer("b")))
    await run(handler, "first")
    uows.db.sessions["s1"].running_turn_id = "turn_other"
    with pytest.raises(SessionBusy) as caught:
        await run(handler, "second")
    assert caught.value.metadata["turn_id"] == "turn_other"
    assert len(uows.db.messages) == 2


@pytest.mark.parametrize(
    ("content", "session", "field"),
    [
        ("", "s1", "user_message.content"),
        ("   ", "s1", "user_message.content"),
        ("x" * 11, "s1", "user_message.content"),
        ("hi", "bad id", "session_id"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_stored(
    content: str, session: str, field: str
) -> None:
    handler, uows = make_handler(ScriptedModel(), max_message_bytes=10)
    with pytest.raises(InvalidInput) as caught:
        await run(handler, content, session)
    assert caught.value.violations[0].field == field
    assert uows.db.commits == 0


async def test_new_message_answers_a_dangling_tool_call_first() -> None:
    call: list[ModelEvent | BaseException] = [
        ModelResponse("", (RequestedToolCall("call_1", "read_file", '{"path": "x"}'),))
    ]
    model = ScriptedModel(call, text_answer("fine"))
    handler, uows = make_handler(model)
    await run(handler, "read x")
    await run(handler, "never mind")
    roles = [(m.role, m.tool_call_id, m.content) for m in uows.db.messages]
    assert roles[2] == (Role.TOOL, "call_1", SUPERSEDED_TOOL_RESULT)
    assert roles[3][2] == "never mind"
    assert [m.role for m in model.requests[1].history] == [
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.USER,
    ]


async def test_cancellation_keeps_partial_text_and_frees_the_session() -> None:
    release = asyncio.Event()

    class SlowModel:
        async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
            yield TextDelta("partial ")
            await release.wait()
            yield ModelResponse("never")

    handler, uows = make_handler(SlowModel())
    received: list[chunks.Chunk] = []
    got_delta = asyncio.Event()

    async def consume() -> None:
        async for chunk in handler.handle(SendUserMessage("s1", "go", tenant_id=DEFAULT_TENANT)):
            received.append(chunk)
            if isinstance(chunk.body, chunks.AssistantDelta):
                got_delta.set()

    task = asyncio.create_task(consume())
    await got_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    turn = uows.db.turns[received[0].turn_id]
    assert turn.status is TurnStatus.CANCELLED
    assert uows.db.sessions["s1"].running_turn_id is None
    partial = uows.db.messages[-1]
    assert (partial.role, partial.content, partial.incomplete) == (Role.ASSISTANT, "partial ", True)


async def test_reasoning_and_tool_arguments_stream_as_deltas_with_no_database_work() -> None:
    all_sent = asyncio.Event()
    during_the_stream: list[tuple[bool, int]] = []

    class ReasoningCaller:
        async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
            yield ReasoningText("I should ")
            yield ReasoningText("read it.")
            yield TextDelta("Reading.")
            yield ToolCallFragment("c1", "read_file", '{"path": ')
            yield ToolCallFragment("c1", "read_file", '"a.py"}')
            await all_sent.wait()  # the client has every delta: what did the database do?
            during_the_stream.append((uows.db.writer.locked(), uows.db.commits))
            call = RequestedToolCall("c1", "read_file", '{"path": "a.py"}')
            yield ModelResponse("Reading.", (call,), reasoning="I should read it.")

    handler, uows = make_handler(ReasoningCaller())
    stream: list[chunks.Chunk] = []
    async for chunk in handler.handle(SendUserMessage("s1", "go", tenant_id=DEFAULT_TENANT)):
        stream.append(chunk)
        if isinstance(chunk.body, chunks.ToolCallDelta) and chunk.body.arguments_fragment.endswith(
            "}"
        ):
            all_sent.set()

    # Only COMMIT #1 had happened, and no transaction was open, while the deltas went out.
    assert during_the_stream == [(False, 1)]
    kinds = [type(c.body) for c in stream]
    first_of = {kind: kinds.index(kind) for kind in kinds}
    assert (
        first_of[chunks.TurnStarted]
        < first_of[chunks.ReasoningDelta]
        < first_of[chunks.AssistantDelta]
        < first_of[chunks.ToolCallDelta]
        < first_of[chunks.ToolCall]
        < first_of[chunks.TurnCompleted]
    )
    reasoning = "".join(c.body.text for c in stream if isinstance(c.body, chunks.ReasoningDelta))
    arguments = "".join(
        c.body.arguments_fragment for c in stream if isinstance(c.body, chunks.ToolCallDelta)
    )
    assert (reasoning, arguments) == ("I should read it.", '{"path": "a.py"}')
    assert [c.seq for c in stream] == list(range(1, len(stream) + 1))
    # The replay log holds no delta; the reasoning is not stored (the default agent's rule).
    logged = [type(c.body) for c in uows.db.chunks[stream[0].turn_id]]
    assert logged == [chunks.TurnStarted, chunks.ToolCall, chunks.TurnCompleted]
    assert uows.db.messages[-1].reasoning == ""
    assert uows.db.commits == 2


async def test_usage_metrics_name_the_servers_models_and_only_turns_that_used_tokens() -> None:
    agents = parse_agents('[agents.coder]\nmodel = "agent-model"\n[agents.ask]\n')
    used = Usage(10, 2)
    model = ScriptedModel(
        *[[ModelRequestRejected("no such model")] for _ in range(20)],  # no tokens
        [ModelResponse("a", usage=used)],
        [ModelResponse("b", usage=used)],
        [ModelResponse("c", usage=used)],
    )
    metrics = PrometheusMetrics()
    handler = build_turns(
        FakeUnitOfWorkFactory(), model, agents, TurnSettings(), default_model="m", metrics=metrics
    ).handler

    async def turn(session: str, requested: str, agent: str = "") -> None:
        said = SendUserMessage(session, "hi", agent=agent, model=requested, tenant_id="t1")
        [c async for c in handler.handle(said)]

    for index in range(20):  # any name a caller makes up
        await turn(f"s{index}", f"made-up-{index}")
    await turn("a", "made-up-with-tokens")
    await turn("b", "", agent="coder")  # the agent's model
    await turn("c", "m", agent="ask")  # the default model
    series = {
        (sample.labels["model"], sample.labels["direction"]): sample.value
        for family in metrics.registry.collect()
        if family.name == "agent_runtime_tenant_tokens"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert series == {
        (model, direction): tokens
        for model in (OTHER_MODEL, "agent-model", "m")
        for direction, tokens in (("in", 10), ("out", 2))
    }


async def test_a_calls_id_is_checked_once_streamed_at_its_first_fragment_whole_when_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked_up: list[str] = []
    find_tool_call = _FakeMessages.find_tool_call

    async def counted(self: _FakeMessages, session_id: str, call_id: str) -> Message | None:
        looked_up.append(call_id)
        return await find_tool_call(self, session_id, call_id)

    monkeypatch.setattr(_FakeMessages, "find_tool_call", counted)
    streamed = RequestedToolCall("c1", "read_file", '{"path": "a.py"}')
    whole = RequestedToolCall("c2", "read_file", '{"path": "b.py"}')
    handler, _ = make_handler(
        ScriptedModel(
            [
                ToolCallFragment("c1", "read_file", '{"path": "a.py"}'),
                ModelResponse("", (streamed,)),
            ],
            [ModelResponse("", (whole,))],  # no fragments: checked when it is recorded
        )
    )

    first = await run(handler, "read a.py", session="s1")
    second = await run(handler, "read b.py", session="s2")

    assert [c.body.call_id for c in first + second if isinstance(c.body, chunks.ToolCall)] == [
        "c1",
        "c2",
    ]
    assert looked_up == ["c1", "c2"]
