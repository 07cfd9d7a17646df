"""Declared tools' schemas through a real server: one not seen before is checked off the event
loop (another session's turn completes meanwhile), one found valid is not checked again
(declared on a session or a request, under any name), and a stream cancelled during a check
leaves nothing behind. The check of a schema's validity is held by GatedSchemaCheck, which
runs the real one."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from tests.e2e.test_metrics import STREAM_MESSAGE, Scraper, metrics
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.gated_schema_check import GatedSchemaCheck
from tests.support.grpc_helpers import rich_error, user_message
from tests.support.runtime_fixtures import Client
from tests.support.waiting import eventually

__all__ = ["metrics"]

# Costly to check (every {} a subschema checked against the metaschema), and valid.
MANY_ALTERNATIVES = {"type": "object", "properties": {"x": {"anyOf": [{}] * 2000}}}
LINT = {"type": "object", "properties": {"path": {"type": "string", "pattern": "\\.py$"}}}
FORMAT = {"type": "object", "properties": {"line": {"type": "integer", "minimum": 1}}}


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    return {"observability": {"metrics_listen": "127.0.0.1:0"}}


def tool(name: str, schema: dict[str, Any]) -> mc.ToolDefinition:
    definition = mc.ToolDefinition(name=name, description=f"the IDE's {name}")
    definition.parameters.update(schema)
    return definition


def declaring(session_id: str, *tools: mc.ToolDefinition) -> rt.StreamMessageRequest:
    request = user_message(session_id, "go on")
    request.tools.extend(tools)
    return request


async def test_another_sessions_turn_completes_while_a_new_schema_is_checked(
    client: Client, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = GatedSchemaCheck(holding=True).install(monkeypatch)
    model_server.enqueue(text_answer("hello b"), text_answer("hello a"))

    turn_a = asyncio.create_task(client.turn(declaring("a", tool("pick", MANY_ALTERNATIVES))))
    await check.wait_until_entered()
    turn_b = await asyncio.wait_for(client.turn(user_message("b", "hi")), 60)
    assert not turn_a.done()  # a's schema is still being checked
    check.release.set()
    chunks_a = await asyncio.wait_for(turn_a, 60)

    assert turn_b[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert chunks_a[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert [r["messages"][-1]["content"] for r in model_server.requests] == ["hi", "go on"]
    assert [t["function"]["name"] for t in model_server.requests[1]["tools"]][-1] == "pick"
    assert check.calls == 1


async def test_a_schema_found_valid_is_not_checked_again(
    client: Client, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = GatedSchemaCheck().install(monkeypatch)
    model_server.default_response = text_answer("done")

    await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="s1", tools=[tool("ide_lint", LINT)])
    )
    assert check.calls == 1
    for _ in range(3):  # a request's tools, declared again with every request
        chunks = await client.turn(declaring("s1", tool("ide_format", FORMAT)))
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert check.calls == 2
    # Under another name, on another session, on a request: the same schema.
    await client.turn(declaring("s2", tool("py_lint", LINT)))
    await client.sessions.UpdateSession(
        ses.UpdateSessionRequest(
            session=ses.Session(session_id="s1", tools=[tool("ide_lint", LINT)]),
            update_mask=field_mask_pb2.FieldMask(paths=["tools"]),
        )
    )
    await client.sessions.UpdateSession(
        ses.UpdateSessionRequest(
            session=ses.Session(session_id="s1", title="lint and format"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    assert check.calls == 2
    # An invalid schema is refused every time it is declared, and checked every time.
    broken = tool("broken", {"type": "object", "properties": {"p": {"pattern": "("}}})
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.turn(declaring("s1", broken))
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.error_info is not None
        assert error.error_info.reason == "INVALID_TOOL_DEFINITION"
        assert error.field_violations[0][0] == "tools[0].parameters"
        assert "tool 'broken': not a valid JSON Schema" in error.field_violations[0][1]
    assert check.calls == 4


async def test_a_stream_cancelled_while_its_schema_is_checked_leaves_nothing_behind(
    client: Client,
    model_server: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
    metrics: Scraper,
) -> None:
    check = GatedSchemaCheck(holding=True).install(monkeypatch)
    model_server.enqueue(text_answer("hello a"))

    call = client.runtime.StreamMessage(declaring("a", tool("pick", MANY_ALTERNATIVES)))
    reading = asyncio.create_task(call.read())
    await check.wait_until_entered()
    call.cancel()

    async def server_ended_it() -> bool:
        cancelled = {"method": STREAM_MESSAGE, "code": "CANCELLED"}
        return await metrics.value("agent_runtime_rpcs_total", **cancelled) == 1

    await eventually(server_ended_it, what="the server to end the cancelled stream")
    check.release.set()  # the check ends after its caller is gone
    with pytest.raises(asyncio.CancelledError):
        await reading

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.GetSession(ses.GetSessionRequest(session_id="a"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert model_server.requests == []
    chunks = await client.turn(declaring("a", tool("pick", MANY_ALTERNATIVES)))
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert check.calls == 2  # the cancelled check's result was dropped, not remembered
