"""`agent-runtime serve` with AGENT_RUNTIME_LOG_FORMAT=json: every line on stderr is a JSON
object, and the lines written while serving a turn name its request, session and turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import rich_error, user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess

REQUEST_ID = "x-request-id"
API_KEY = "k-logs-test"
AUTH = ("authorization", f"Bearer {API_KEY}")


def request_id_of(metadata: Any) -> str:
    values = [value for key, value in metadata or () if key == REQUEST_ID]
    assert len(values) == 1, metadata
    return str(values[0])


async def test_json_log_lines_carry_the_request_session_and_turn(tmp_path: Path) -> None:
    async with FakeModelServer() as model:
        model.enqueue(text_answer("Hello"))
        server = ServerProcess(
            tmp_path / "runtime.db",
            env={
                "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
                "AGENT_RUNTIME_LOG_FORMAT": "json",
                "AGENT_RUNTIME_API_KEYS": f"{API_KEY}=team-a",
            },
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                client = connect(channel)
                call = client.runtime.StreamMessage(
                    user_message("s1", "hi"), metadata=((REQUEST_ID, "req-turn-1"), AUTH)
                )
                chunks = [chunk async for chunk in call]
                assert request_id_of(await call.trailing_metadata()) == "req-turn-1"

                # Without one of its own, a call gets a fresh request id back.
                unary = client.sessions.GetSession(
                    ses.GetSessionRequest(session_id="s1"), metadata=(AUTH,)
                )
                await unary
                generated = request_id_of(await unary.trailing_metadata())
                assert generated and generated != "req-turn-1"

                # An error's trailers carry it too, next to the google.rpc details.
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await client.sessions.GetSession(
                        ses.GetSessionRequest(session_id="nope"),
                        metadata=((REQUEST_ID, "req-missing"), AUTH),
                    )
                assert request_id_of(failed.value.trailing_metadata()) == "req-missing"
                info = rich_error(failed.value).error_info
                assert info is not None and info.reason == "SESSION_NOT_FOUND"
        finally:
            assert await server.terminate() == 0, server.output()

    lines = [json.loads(line) for line in server.output().splitlines()]
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
        assert {"request_id", "tenant_id", "session_id", "turn_id"} <= line.keys(), line
    turn_id = chunks[0].turn_id
    ended = [line for line in lines if line["message"].startswith(f"turn {turn_id} ended")]
    assert len(ended) == 1, server.output()
    assert ended[0]["level"] == "INFO"
    assert ended[0]["request_id"] == "req-turn-1"
    assert ended[0]["session_id"] == "s1"
    assert ended[0]["turn_id"] == turn_id
    assert ended[0]["tenant_id"] == "team-a"  # the API key's tenant
    # Start-up lines belong to no request.
    listening = next(line for line in lines if line["message"].startswith("listening on"))
    assert listening["request_id"] == listening["tenant_id"] == listening["session_id"] == ""
