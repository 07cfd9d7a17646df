"""The whole coding-agent conversation through the TurnHandler, with fakes."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from agent_runtime.application.approval_decisions import (
    EXPIRED_TOOL_RESULT,
    REJECTED_TOOL_RESULT,
)
from agent_runtime.application.commands import (
    DecideApproval,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.ports import ChatRequest
from agent_runtime.application.turn_inputs import SUPERSEDED_TOOL_RESULT
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue, default_agents
from agent_runtime.domain.approval import ApprovalStatus, ApprovalVerdict
from agent_runtime.domain.errors import InvalidInput, NotFound, PreconditionFailed
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Role, StopReason
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    RequestedToolCall,
    ToolCallFragment,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.object_graph import build_turns
from tests.fakes import FakeUnitOfWorkFactory, ScriptedModel, text_answer
from tests.support.history import history_problems


def tool_answer(name: str, args: str, call_id: str) -> list[ModelEvent | BaseException]:
    return [ModelResponse("", (RequestedToolCall(call_id, name, args),))]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Conversation:
    def __init__(
        self,
        *answers: list[ModelEvent | BaseException],
        agents: AgentCatalogue | None = None,
        **settings: Any,
    ) -> None:
        self.model = ScriptedModel(*answers)
        self.uows = FakeUnitOfWorkFactory()
        self.clock = Clock()
        self.handler = build_turns(
            self.uows,
            self.model,
            agents or default_agents(),
            TurnSettings(**settings),
            default_model="m",
            clock=self.clock,
        ).handler

    async def send(self, cmd: TurnCommand) -> list[chunks.Chunk]:
        return [c async for c in self.handler.handle(cmd)]

    async def say(self, text: str, **kw: Any) -> list[chunks.Chunk]:
        return await self.send(SendUserMessage("s1", text, **kw, tenant_id=DEFAULT_TENANT))

    def history(self) -> list[tuple[Role, str]]:
        return [(m.role, m.content) for m in self.uows.db.messages]

    def status_of(self, call_id: str) -> ApprovalStatus:
        return self.uows.db.approvals[("s1", call_id)].status

    def assert_history_valid(self) -> None:
        triples = [
            (m.role.value, m.requested_call.call_id if m.requested_call else None, m.tool_call_id)
            for m in sorted(self.uows.db.messages, key=lambda m: m.position)
        ]
        assert history_problems(triples) == []


T = TypeVar("T")


def body_of(stream: list[chunks.Chunk], kind: type[T]) -> T:
    found = [c.body for c in stream if isinstance(c.body, kind)]
    assert len(found) == 1, [type(c.body).__name__ for c in stream]
    return found[0]


def stop_of(stream: list[chunks.Chunk]) -> StopReason:
    return body_of(stream, chunks.TurnCompleted).stop_reason


async def test_a_whole_coding_conversation() -> None:
    convo = Conversation(
        tool_answer("read_file", '{"path": "app.py"}', "call_r"),
        tool_answer("write_file", '{"path": "app.py", "content": "fixed"}', "call_w"),
        text_answer("Done: app.py is fixed."),
    )
    first = await convo.say("fix app.py")
    assert body_of(first, chunks.ToolCall).requires_approval is False
    assert stop_of(first) is StopReason.TOOL_CALL

    second = await convo.send(
        SubmitToolResult("s1", "call_r", "print('bug')", tenant_id=DEFAULT_TENANT)
    )
    write = body_of(second, chunks.ToolCall)
    assert (write.call_id, write.requires_approval) == ("call_w", True)
    assert stop_of(second) is StopReason.AWAITING_APPROVAL
    assert convo.status_of("call_w") is ApprovalStatus.PENDING

    with pytest.raises(PreconditionFailed) as refused:
        await convo.send(
            SubmitToolResult("s1", "call_w", "ran it anyway", tenant_id=DEFAULT_TENANT)
        )
    assert refused.value.reason == "APPROVAL_REQUIRED"

    approved = await convo.send(
        DecideApproval("s1", "call_w", ApprovalVerdict.APPROVE, tenant_id=DEFAULT_TENANT)
    )
    again = body_of(approved, chunks.ToolCall)
    assert (again.call_id, again.requires_approval, again.message_id) == (
        "call_w",
        False,
        write.message_id,
    )
    assert stop_of(approved) is StopReason.TOOL_CALL
    assert convo.status_of("call_w") is ApprovalStatus.APPROVED

    final = await convo.send(SubmitToolResult("s1", "call_w", "written", tenant_id=DEFAULT_TENANT))
    assert body_of(final, chunks.AssistantMessage).content == "Done: app.py is fixed."
    assert [r for r, _ in convo.history()] == [
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
    ]
    convo.assert_history_valid()
    assert convo.uows.db.sessions["s1"].running_turn_id is None

    with pytest.raises(PreconditionFailed) as twice:
        await convo.send(SubmitToolResult("s1", "call_w", "again", tenant_id=DEFAULT_TENANT))
    assert twice.value.reason == "ALREADY_ANSWERED"
    with pytest.raises(PreconditionFailed) as decided:
        await convo.send(
            DecideApproval("s1", "call_w", ApprovalVerdict.APPROVE, tenant_id=DEFAULT_TENANT)
        )
    assert decided.value.reason == "ALREADY_DECIDED"


async def test_reject_tells_the_model_and_it_answers_in_the_same_stream() -> None:
    convo = Conversation(
        tool_answer("execute_command", '{"command": "rm -rf build"}', "call_x"),
        text_answer("Understood, I will not delete it."),
    )
    await convo.say("clean up")
    stream = await convo.send(
        DecideApproval(
            "s1", "call_x", ApprovalVerdict.REJECT, feedback="keep build/", tenant_id=DEFAULT_TENANT
        )
    )
    assert body_of(stream, chunks.AssistantMessage).content.startswith("Understood")
    rejection = convo.uows.db.messages[2]
    assert (rejection.role, rejection.tool_call_id) == (Role.TOOL, "call_x")
    assert rejection.content == f"{REJECTED_TOOL_RESULT}. Feedback: keep build/"
    assert convo.model.requests[1].history[-1].content == rejection.content
    approval = convo.uows.db.approvals[("s1", "call_x")]
    assert (approval.status, approval.feedback) == (ApprovalStatus.REJECTED, "keep build/")
    convo.assert_history_valid()


async def test_edit_runs_the_edited_arguments_and_keeps_the_original_on_record() -> None:
    convo = Conversation(
        tool_answer("write_file", '{"path": "a.py", "content": "v1"}', "call_e"),
    )
    await convo.say("write a.py")
    stream = await convo.send(
        DecideApproval(
            "s1",
            "call_e",
            ApprovalVerdict.EDIT,
            edited_arguments={"path": "a.py", "content": "v2"},
            tenant_id=DEFAULT_TENANT,
        )
    )
    edited = body_of(stream, chunks.ToolCall)
    assert edited.arguments == {"path": "a.py", "content": "v2"}
    assert not edited.requires_approval
    assert convo.uows.db.messages[1].tool_calls[0].arguments["content"] == "v2"
    approval = convo.uows.db.approvals[("s1", "call_e")]
    assert approval.arguments["content"] == "v1"
    assert approval.final_arguments == {"path": "a.py", "content": "v2"}
    assert approval.status is ApprovalStatus.EDITED


async def test_edit_with_arguments_the_agent_may_not_use_is_refused() -> None:
    convo = Conversation(tool_answer("write_file", '{"path": "a.py", "content": "v1"}', "c"))
    await convo.say("write")
    with pytest.raises(InvalidInput) as caught:
        await convo.send(
            DecideApproval(
                "s1",
                "c",
                ApprovalVerdict.EDIT,
                edited_arguments={"path": 3},
                tenant_id=DEFAULT_TENANT,
            )
        )
    assert caught.value.violations[0].field == "approval_decision.edited_arguments"
    assert convo.uows.db.approvals[("s1", "c")].status is ApprovalStatus.PENDING


async def test_an_expired_approval_behaves_as_rejected() -> None:
    convo = Conversation(
        tool_answer("delete_file", '{"path": "old.py"}', "call_d"),
        text_answer("OK, left it."),
        approval_ttl_seconds=600,
    )
    await convo.say("delete old.py")
    convo.clock.now += timedelta(minutes=11)
    with pytest.raises(PreconditionFailed) as caught:
        await convo.send(SubmitToolResult("s1", "call_d", "deleted", tenant_id=DEFAULT_TENANT))
    assert caught.value.reason == "APPROVAL_EXPIRED"

    stream = await convo.send(
        DecideApproval("s1", "call_d", ApprovalVerdict.APPROVE, tenant_id=DEFAULT_TENANT)
    )
    assert not [c for c in stream if isinstance(c.body, chunks.ToolCall)]
    assert body_of(stream, chunks.AssistantMessage).content == "OK, left it."
    assert convo.uows.db.messages[2].content == EXPIRED_TOOL_RESULT
    assert convo.uows.db.approvals[("s1", "call_d")].status is ApprovalStatus.EXPIRED


async def test_a_new_message_supersedes_an_open_call_and_its_approval() -> None:
    convo = Conversation(
        tool_answer("write_file", '{"path": "a.md", "content": "x"}', "call_1"),
        text_answer("Sure."),
    )
    await convo.say("write a note")
    await convo.say("actually, never mind")
    assert convo.history()[2] == (Role.TOOL, SUPERSEDED_TOOL_RESULT)
    assert convo.uows.db.approvals[("s1", "call_1")].status is ApprovalStatus.SUPERSEDED
    convo.assert_history_valid()
    with pytest.raises(PreconditionFailed):
        await convo.send(
            DecideApproval("s1", "call_1", ApprovalVerdict.APPROVE, tenant_id=DEFAULT_TENANT)
        )


@pytest.mark.parametrize(
    ("cmd", "error", "reason"),
    [
        (
            SubmitToolResult("s1", "nope", "x", tenant_id=DEFAULT_TENANT),
            NotFound,
            "TOOL_CALL_NOT_FOUND",
        ),
        (
            DecideApproval("s1", "nope", ApprovalVerdict.APPROVE, tenant_id=DEFAULT_TENANT),
            NotFound,
            "APPROVAL_NOT_FOUND",
        ),
        (
            SubmitToolResult("other", "c", "x", tenant_id=DEFAULT_TENANT),
            NotFound,
            "SESSION_NOT_FOUND",
        ),
        (DecideApproval("s1", "c", None, tenant_id=DEFAULT_TENANT), InvalidInput, "INVALID_INPUT"),
        (
            DecideApproval("s1", "c", ApprovalVerdict.EDIT, tenant_id=DEFAULT_TENANT),
            InvalidInput,
            "INVALID_INPUT",
        ),
        (SwitchAgent("s1", "wizard", tenant_id=DEFAULT_TENANT), InvalidInput, "UNKNOWN_AGENT"),
        (SubmitToolResult("s1", "", "x", tenant_id=DEFAULT_TENANT), InvalidInput, "INVALID_INPUT"),
    ],
)
async def test_inputs_that_do_not_fit_are_refused_before_anything_is_stored(
    cmd: TurnCommand, error: type[Exception], reason: str
) -> None:
    convo = Conversation(text_answer("hi"))
    await convo.say("hello")
    before = (convo.uows.db.commits, len(convo.uows.db.messages))
    with pytest.raises(error) as caught:
        await convo.send(cmd)
    assert getattr(caught.value, "reason", None) == reason
    assert (convo.uows.db.commits, len(convo.uows.db.messages)) == before
    assert convo.uows.db.sessions["s1"].running_turn_id is None


async def test_switch_agent_is_recorded_in_the_agent_history() -> None:
    convo = Conversation(text_answer("I only read."))
    stream = await convo.send(
        SwitchAgent("s1", "ask", reason="questions only", tenant_id=DEFAULT_TENANT)
    )
    assert body_of(stream, chunks.AgentSwitched) == chunks.AgentSwitched(
        "coder", "ask", "questions only"
    )
    assert stop_of(stream) is StopReason.END_TURN
    assert convo.uows.db.sessions["s1"].agent == "ask"
    assert [(s.from_agent, s.to_agent) for _, s in convo.uows.db.switches] == [("coder", "ask")]
    await convo.say("what does main do?")
    assert "write_file" not in [t.name for t in convo.model.requests[0].tools]


async def test_switch_mode_runs_in_the_runtime_and_the_new_agent_continues() -> None:
    convo = Conversation(
        tool_answer("switch_mode", '{"mode": "debug", "reason": "a crash"}', "call_s"),
        text_answer("Let me reproduce the crash."),
    )
    stream = await convo.say("it crashes")
    kinds = [type(c.body) for c in stream]
    assert chunks.ToolCall not in kinds
    assert body_of(stream, chunks.AgentSwitched).to_agent == "debug"
    assert body_of(stream, chunks.AssistantMessage).content.startswith("Let me")
    assert "debugging specialist" in convo.model.requests[1].system_prompt
    assert convo.history()[2] == (Role.TOOL, "Switched to agent 'debug'.")
    convo.assert_history_valid()


async def test_switch_mode_to_an_unknown_mode_is_a_tool_error_for_the_model() -> None:
    convo = Conversation(
        tool_answer("switch_mode", '{"mode": "wizard"}', "call_s"),
        text_answer("ok"),
    )
    stream = await convo.say("go")
    assert not [c for c in stream if isinstance(c.body, chunks.AgentSwitched)]
    assert convo.history()[2][1].startswith("Unknown mode 'wizard'")


async def test_restricted_call_never_reaches_the_client() -> None:
    convo = Conversation(
        tool_answer("write_file", '{"path": "main.py", "content": "x"}', "call_p"),
        tool_answer("write_file", '{"path": "PLAN.md", "content": "x"}', "call_m"),
    )
    await convo.send(SwitchAgent("s1", "architect", tenant_id=DEFAULT_TENANT))
    stream = await convo.say("write the plan")
    call = body_of(stream, chunks.ToolCall)
    assert call.arguments["path"] == "PLAN.md"
    refusal = convo.uows.db.messages[2]
    assert refusal.role is Role.TOOL and "main.py" in refusal.content and refusal.is_error


@pytest.mark.parametrize(
    ("answer", "message", "expected"),
    [
        ('{"agent": "architect", "confidence": 0.8, "reason": "design"}', "hello", "architect"),
        ("I think debug?", "the build fails with a traceback", "debug"),
        ("not json", "hello there", "coder"),
    ],
)
async def test_orchestrator_routes_the_first_message(
    answer: str, message: str, expected: str
) -> None:
    convo = Conversation([ModelResponse(answer)], text_answer("On it."))
    stream = await convo.say(message, agent="orchestrator")
    switched = body_of(stream, chunks.AgentSwitched)
    assert (switched.from_agent, switched.to_agent) == ("orchestrator", expected)
    deltas = "".join(c.body.text for c in stream if isinstance(c.body, chunks.AssistantDelta))
    assert deltas == "On it."  # the classification answer is not streamed
    assert convo.model.requests[0].tools == []
    assert convo.uows.db.sessions["s1"].agent == expected
    assert body_of(stream, chunks.TurnStarted).agent == "orchestrator"


async def test_events_are_committed_with_the_state_they_describe() -> None:
    convo = Conversation(tool_answer("write_file", '{"path": "a", "content": "b"}', "c1"))
    stream = await convo.say("write")
    types = [e.event.type for e in convo.uows.db.events]
    assert types == [
        EventType.TURN_STARTED,
        EventType.MESSAGE_PERSISTED,
        EventType.MODEL_REQUEST_STARTED,
        EventType.MODEL_REQUEST_COMPLETED,
        EventType.MESSAGE_PERSISTED,
        EventType.APPROVAL_REQUIRED,
        EventType.TURN_COMPLETED,
    ]
    assert {e.event.turn_id for e in convo.uows.db.events} == {stream[0].turn_id}


async def test_a_failed_commit_2_publishes_no_event_for_what_rolled_back() -> None:
    convo = Conversation(text_answer("lost"))
    convo.uows.db.failing_commits[2] = RuntimeError("disk full")  # commit #2
    await convo.say("hi")
    types = [e.event.type for e in convo.uows.db.events]
    assert types == [
        EventType.TURN_STARTED,
        EventType.MESSAGE_PERSISTED,
        EventType.MODEL_REQUEST_STARTED,
        EventType.MODEL_REQUEST_COMPLETED,
        EventType.MESSAGE_PERSISTED,  # the answer the client saw, kept incomplete
        EventType.TURN_FAILED,
    ]
    kept = convo.uows.db.messages[-1]
    assert (kept.role, kept.content, kept.incomplete) == (Role.ASSISTANT, "lost", True)


async def test_a_reused_call_id_gets_a_unique_one() -> None:
    convo = Conversation(
        tool_answer("read_file", '{"path": "a"}', "call_0"),
        tool_answer("read_file", '{"path": "b"}', "call_0"),
    )
    await convo.say("read a")
    stream = await convo.send(SubmitToolResult("s1", "call_0", "A", tenant_id=DEFAULT_TENANT))
    second = body_of(stream, chunks.ToolCall)
    assert second.call_id != "call_0"
    await convo.send(
        SubmitToolResult("s1", second.call_id, "B", tenant_id=DEFAULT_TENANT)
    )  # accepted
    convo.assert_history_valid()


async def test_a_streamed_calls_fragments_and_the_call_carry_one_id_new_in_the_session() -> None:
    def streamed(arguments: str) -> list[ModelEvent | BaseException]:
        # As vLLM and llama.cpp number calls: from call_0 in every response.
        return [
            ToolCallFragment("call_0", "read_file", arguments),
            ModelResponse("", (RequestedToolCall("call_0", "read_file", arguments),)),
        ]

    convo = Conversation(
        streamed('{"path": 7}'),  # refused (not a string): the model tries again
        streamed('{"path": "a.py"}'),
        streamed('{"path": "b.py"}'),  # the next turn's
    )
    first = await convo.say("read a.py")
    answered = body_of(first, chunks.ToolCall).call_id
    second = await convo.send(SubmitToolResult("s1", answered, "A", tenant_id=DEFAULT_TENANT))

    ids = []
    for stream in (first, second):
        call = body_of(stream, chunks.ToolCall)
        fragments: dict[str, str] = {}
        for delta in (c.body for c in stream if isinstance(c.body, chunks.ToolCallDelta)):
            fragments[delta.call_id] = fragments.get(delta.call_id, "") + delta.arguments_fragment
        assert json.loads(fragments.pop(call.call_id)) == call.arguments
        ids += [call.call_id, *fragments]
    assert body_of(first, chunks.ToolCall).arguments == {"path": "a.py"}
    assert len(set(ids)) == len(ids) == 3  # the refused call's, and each turn's call
    convo.assert_history_valid()


class ModelByCallback:
    def __init__(self, answer: Callable[[ChatRequest], list[ModelEvent | BaseException]]) -> None:
        self.answer = answer

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        for event in self.answer(request):
            if isinstance(event, BaseException):
                raise event
            yield event
