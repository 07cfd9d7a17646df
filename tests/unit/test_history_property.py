"""Property: whatever inputs arrive in whatever order (regenerate and edit_message among
them), and whatever the model answers, the stored history stays acceptable to an
OpenAI-style provider, and so does every history sent to the model: each tool call answered,
nothing superseded in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.application.commands import (
    DecideApproval,
    EditMessage,
    Regenerate,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.ports import ChatRequest
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.approval import ApprovalVerdict
from agent_runtime.domain.errors import DomainError, ModelUnavailable
from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    RequestedToolCall,
    TextDelta,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.object_graph import build_turns
from tests.fakes import FakeUnitOfWorkFactory
from tests.support.history import history_problems

ANSWERS = [
    ("text", None),
    ("call", ("read_file", '{"path": "a.py"}')),
    ("call", ("write_file", '{"path": "a.py", "content": "x"}')),
    ("call", ("execute_command", '{"command": "make"}')),
    ("call", ("read_file", "{broken")),
    ("call", ("no_such_tool", "{}")),
    ("call", ("switch_mode", '{"mode": "ask"}')),
    ("call", ("switch_mode", '{"mode": "coder"}')),
    ("fail", None),
    ("fail_midway", None),
]


def triples(messages: list[Message]) -> list[tuple[str, str | None, str | None]]:
    return [
        (m.role.value, m.requested_call.call_id if m.requested_call else None, m.tool_call_id)
        for m in messages
    ]


class DrawnModel:
    """Answers each call with a kind drawn by hypothesis; notes what is wrong with each
    history it is sent (an assertion here would only fail the turn, as a crash)."""

    def __init__(self, data: st.DataObject, uows: FakeUnitOfWorkFactory) -> None:
        self.data = data
        self.uows = uows
        self.calls = 0
        self.problems: list[str] = []

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        self.calls += 1
        sent = list(request.history)
        self.problems += history_problems(triples(sent))
        if sent and sent[-1].requested_call is not None:
            self.problems.append("the history sent ends with an unanswered call")
        superseded = {m.message_id for m in self.uows.db.messages if m.superseded_by_turn_id}
        if superseded & {m.message_id for m in sent}:
            self.problems.append(
                f"superseded messages sent: {superseded & {m.message_id for m in sent}}"
            )
        kind, detail = self.data.draw(st.sampled_from(ANSWERS), label="model answer")
        if kind == "fail":
            raise ModelUnavailable("down")
        yield TextDelta("thinking ")
        if kind == "fail_midway":
            raise ModelUnavailable("cut", reason="MODEL_STREAM_INTERRUPTED")
        if kind == "text":
            yield ModelResponse("thinking done")
            return
        assert detail is not None
        name, args = detail
        yield ModelResponse("", (RequestedToolCall(f"call_{self.calls}", name, args),))


def open_call(uows: FakeUnitOfWorkFactory) -> str | None:
    messages = sorted(
        (m for m in uows.db.messages if m.superseded_by_turn_id is None), key=lambda m: m.position
    )
    if messages and messages[-1].requested_call is not None:
        return messages[-1].requested_call.call_id
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_history_is_always_valid_for_the_provider(data: st.DataObject) -> None:
    asyncio.run(_run(data))


async def _run(data: st.DataObject) -> None:
    uows = FakeUnitOfWorkFactory()
    model = DrawnModel(data, uows)
    handler = build_turns(
        uows,
        model,
        default_agents(),
        TurnSettings(max_iterations=4, approval_ttl_seconds=3600),
        default_model="m",
    ).handler
    steps = data.draw(st.integers(min_value=1, max_value=12), label="steps")
    for _ in range(steps):
        call = open_call(uows)
        kind = data.draw(
            st.sampled_from(
                [
                    "user",
                    "result",
                    "approve",
                    "edit",
                    "reject",
                    "switch",
                    "stray_result",
                    "regenerate",
                    "edit_message",
                ]
            ),
            label="input",
        )
        cmd: TurnCommand
        match kind:
            case "user":
                cmd = SendUserMessage("s1", "do something", tenant_id=DEFAULT_TENANT)
            case "result":
                cmd = SubmitToolResult(
                    "s1",
                    call or "none",
                    "output",
                    is_error=data.draw(st.booleans()),
                    tenant_id=DEFAULT_TENANT,
                )
            case "approve" | "reject":
                verdict = ApprovalVerdict.APPROVE if kind == "approve" else ApprovalVerdict.REJECT
                cmd = DecideApproval(
                    "s1", call or "none", verdict, feedback="f", tenant_id=DEFAULT_TENANT
                )
            case "edit":
                cmd = DecideApproval(
                    "s1",
                    call or "none",
                    ApprovalVerdict.EDIT,
                    edited_arguments={"path": "b.py", "content": "y"},
                    tenant_id=DEFAULT_TENANT,
                )
            case "regenerate":
                cmd = Regenerate("s1", tenant_id=DEFAULT_TENANT)
            case "edit_message":
                # Any message: a visible user message is edited; others are refused.
                ids = [m.message_id for m in uows.db.messages] or ["msg_none"]
                users = [
                    m.message_id
                    for m in uows.db.messages
                    if m.role is Role.USER and m.superseded_by_turn_id is None
                ]
                target = data.draw(st.sampled_from(users or ids), label="edited")
                if data.draw(st.booleans(), label="edit another message"):
                    target = data.draw(st.sampled_from(ids), label="edited instead")
                cmd = EditMessage("s1", target, "do it differently", tenant_id=DEFAULT_TENANT)
            case "switch":
                cmd = SwitchAgent(
                    "s1",
                    data.draw(st.sampled_from(["coder", "ask", "debug"])),
                    tenant_id=DEFAULT_TENANT,
                )
            case _:
                cmd = SubmitToolResult("s1", "call_unknown", "stray", tenant_id=DEFAULT_TENANT)
        try:
            async for _chunk in handler.handle(cmd):
                pass
        except DomainError:
            pass  # refused inputs are fine; they must just leave no trace
        assert model.problems == [], (kind, model.problems)
        stored = sorted(uows.db.messages, key=lambda m: m.position)
        visible = [m for m in stored if m.superseded_by_turn_id is None]
        assert history_problems(triples(visible)) == [], (kind, triples(visible))
        # A call among what was superseded was answered first: the record is a valid history
        # as a whole too.
        assert history_problems(triples(stored)) == [], (kind, triples(stored))
        superseding = {m.superseded_by_turn_id for m in stored} - {None}
        assert superseding <= set(uows.db.turns), "superseded by a turn that does not exist"
        positions = sorted(m.position for m in uows.db.messages)
        assert positions == list(range(1, len(positions) + 1))
        if "s1" in uows.db.sessions:
            assert uows.db.sessions["s1"].running_turn_id is None
            assert uows.db.sessions["s1"].message_count == len(positions)
