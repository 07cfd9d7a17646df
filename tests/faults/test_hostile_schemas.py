"""A client declares a tool whose JSON Schema has a catastrophic pattern, and the model answers
with arguments that trigger it: through a real server and a real model endpoint, the turn
goes on (the model reads "argument check timed out" and answers), and the event loop was not
pinned: another session's turn is served while the first is still open."""

from __future__ import annotations

import asyncio

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import kinds, user_message
from tests.support.runtime_fixtures import Client

# With Python's re, ^(a|aa)+$ against this backtracks through ~10^12 ways to split the a's.
CATASTROPHIC = "^(a|aa)+$"
HOSTILE_ARGUMENTS = {"name": "a" * 60 + "b"}


def find_tool() -> mc.ToolDefinition:
    definition = mc.ToolDefinition(name="ide_find", description="finds a symbol")
    definition.parameters.update(
        {
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": CATASTROPHIC}},
            "required": ["name"],
        }
    )
    return definition


class TwoSessions:
    """The model's side: session a's question gets the hostile tool call; once a's model has
    read the tool error, its answer waits for `release_a`; session b is answered at once."""

    def __init__(self) -> None:
        self.a_read_the_error = asyncio.Event()
        self.release_a = asyncio.Event()
        self.order: list[str] = []

    async def respond(self, request: RequestBody, out: ResponseWriter) -> None:
        last = request["messages"][-1]
        if last["role"] == "user" and last["content"] == "find it":
            self.order.append("a: hostile call")
            await tool_call_answer("ide_find", HOSTILE_ARGUMENTS, call_id="c1").respond(
                request, out
            )
        elif last["role"] == "tool":
            self.order.append("a: read the tool error")
            self.a_read_the_error.set()
            await self.release_a.wait()
            await text_answer("I could not search for that name").respond(request, out)
        else:
            self.order.append("b: answered")
            await text_answer("hello b").respond(request, out)


async def test_a_catastrophic_pattern_is_a_tool_error_and_other_sessions_are_served(
    client: Client, model_server: FakeModelServer
) -> None:
    model = TwoSessions()
    model_server.default_response = ScriptedResponse(model.respond, "two sessions")
    await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="a", tools=[find_tool()])
    )

    turn_a = asyncio.ensure_future(client.turn(user_message("a", "find it")))
    # The check of the hostile arguments ended, and the model was told why.
    await asyncio.wait_for(model.a_read_the_error.wait(), 60)
    turn_b = await asyncio.wait_for(client.turn(user_message("b", "hi")), 60)
    assert not turn_a.done()  # b was served while a's turn was still open
    model.release_a.set()
    chunks_a = await asyncio.wait_for(turn_a, 60)

    assert model.order == ["a: hostile call", "a: read the tool error", "b: answered"]
    assert turn_b[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    deltas = ("assistant_delta", "tool_call_delta")
    finals = [c for c in chunks_a if c.WhichOneof("chunk") not in deltas]
    assert kinds(finals) == ["turn_started", "assistant_message", "turn_completed"]
    assert finals[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    # The call never reached the client; the model read why, as for any refused call.
    error = model_server.requests[1]["messages"][-1]
    assert (error["role"], error["tool_call_id"]) == ("tool", "c1")
    assert "argument check timed out" in error["content"]
