"""The real `agent-runtime serve` process: restarts, crashes, reflection, health, fake model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from agent_runtime import bootstrap
from agent_runtime.config import DatabaseSettings, ServerSettings, Settings
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc, session_pb2_grpc
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import decision, kinds, tool_result, user_message
from tests.support.server_process import ServerProcess


@pytest.fixture
async def model_server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


async def stream(address: str, request: rt.StreamMessageRequest) -> list[rt.StreamChunk]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel)
        return [chunk async for chunk in stub.StreamMessage(request)]


async def list_messages(address: str, session_id: str) -> list[ses.Message]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        page = await stub.ListMessages(ses.ListMessagesRequest(session_id=session_id))
        return list(page.messages)


async def test_history_survives_a_server_restart(
    database_url: str, model_server: FakeModelServer
) -> None:
    db = database_url
    env = {"AGENT_RUNTIME_LLM_BASE_URL": model_server.base_url}
    first = ServerProcess(db, env=env)
    await first.start()
    try:
        model_server.enqueue(text_answer("stored for good"))
        chunks = await stream(first.address, user_message("s1", "remember this"))
        assert kinds(chunks)[-2:] == ["assistant_message", "turn_completed"]
    finally:
        assert await first.terminate() == 0, first.output()

    second = ServerProcess(db, env=env)
    await second.start()
    try:
        messages = await list_messages(second.address, "s1")
    finally:
        assert await second.terminate() == 0, second.output()
    assert [(m.role, m.content) for m in messages] == [
        (ses.ROLE_USER, "remember this"),
        (ses.ROLE_ASSISTANT, "stored for good"),
    ]


async def test_a_crash_mid_turn_keeps_the_input_and_frees_the_session(
    database_url: str, model_server: FakeModelServer
) -> None:
    db = database_url
    env = {"AGENT_RUNTIME_LLM_BASE_URL": model_server.base_url}
    model_asked = asyncio.Event()

    async def hang(_body: dict[str, Any]) -> None:
        model_asked.set()
        await asyncio.Event().wait()

    model_server.on_request = hang
    crashing = ServerProcess(db, env=env)
    await crashing.start()
    async with grpc.aio.insecure_channel(crashing.address) as channel:
        call = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel).StreamMessage(
            user_message("s1", "acknowledged, then the server died")
        )
        started = await call.read()
        assert started.WhichOneof("chunk") == "turn_started"
        await model_asked.wait()
        await crashing.kill_hard()

    model_server.on_request = None
    restarted = ServerProcess(db, env=env)
    await restarted.start()
    try:
        assert "marked interrupted" in restarted.output()
        assert [m.content for m in await list_messages(restarted.address, "s1")] == [
            "acknowledged, then the server died"
        ]
        model_server.enqueue(text_answer("back"))
        chunks = await stream(restarted.address, user_message("s1", "are you there?"))
        assert chunks[-2].assistant_message.content == "back"
    finally:
        assert await restarted.terminate() == 0, restarted.output()


async def test_reflection_health_and_builtin_fake_model(tmp_path: Path) -> None:
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
    )
    runtime = await bootstrap.start(settings)
    address = f"127.0.0.1:{runtime.port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "agent_runtime.v1.AgentRuntimeService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

        def reflected_services() -> list[str]:
            with grpc.insecure_channel(address) as sync_channel:
                return sorted(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

        services = await asyncio.to_thread(reflected_services)
        assert {
            "agent_runtime.v1.AgentRuntimeService",
            "agent_runtime.v1.SessionService",
            "grpc.health.v1.Health",
        } <= set(services)

        text = await stream(address, user_message("demo", "hello"))
        assert "built-in fake model" in text[-2].assistant_message.content
        streamed = await stream(
            address, user_message("demo", '/tool write_file {"path": "a.md", "content": "hi"}')
        )
        written = "".join(c.tool_call_delta.arguments_fragment for c in streamed[1:-2])
        assert written == '{"path": "a.md", "content": "hi"}'  # streamed as it was written
        tool = [c for c in streamed if not c.HasField("tool_call_delta")]
        assert kinds(tool) == ["turn_started", "tool_call", "turn_completed"]
        assert tool[1].tool_call.requires_approval is True
        approved = await stream(
            address, decision("demo", tool[1].tool_call.call_id, rt.DECISION_APPROVE)
        )
        assert approved[1].tool_call.requires_approval is False
        answered = await stream(address, tool_result("demo", tool[1].tool_call.call_id, "ok!"))
        assert answered[-2].assistant_message.content == "The tool returned: ok!"
        failed = await stream(address, user_message("demo", "/error"))
        assert kinds(failed)[-2:] == ["error", "turn_completed"]
    finally:
        await runtime.stop(grace=None)
