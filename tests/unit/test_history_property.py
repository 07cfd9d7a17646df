"""Property: whatever inputs arrive in whatever order, and whatever the model answers, the
stored history stays acceptable to an OpenAI-style provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.application.commands import (
    DecideApproval,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.ports import ChatRequest
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.errors import DomainError, ModelUnavailable
from agent_runtime.domain.model import ApprovalVerdict
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


class DrawnModel:
    """Answers each call with a kind drawn by hypothesis."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.calls = 0

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        self.calls += 1
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
    messages = sorted(uows.db.messages, key=lambda m: m.position)
    if messages and messages[-1].requested_call is not None:
        return messages[-1].requested_call.call_id
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_history_is_always_valid_for_the_provider(data: st.DataObject) -> None:
    asyncio.run(_run(data))


async def _run(data: st.DataObject) -> None:
    uows = FakeUnitOfWorkFactory()
    handler = build_turns(
        uows,
        DrawnModel(data),
        default_agents(),
        TurnSettings(max_iterations=4, approval_ttl_seconds=3600),
        default_model="m",
    ).handler
    steps = data.draw(st.integers(min_value=1, max_value=12), label="steps")
    for _ in range(steps):
        call = open_call(uows)
        kind = data.draw(
            st.sampled_from(
                ["user", "result", "approve", "edit", "reject", "switch", "stray_result"]
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
        triples = [
            (m.role.value, m.requested_call.call_id if m.requested_call else None, m.tool_call_id)
            for m in sorted(uows.db.messages, key=lambda m: m.position)
        ]
        assert history_problems(triples) == [], (kind, triples)
        positions = sorted(m.position for m in uows.db.messages)
        assert positions == list(range(1, len(positions) + 1))
        if "s1" in uows.db.sessions:
            assert uows.db.sessions["s1"].running_turn_id is None
            assert uows.db.sessions["s1"].message_count == len(positions)
