"""The model endpoint's switches for servers that do not take OpenAI's fields, wired into a
running server: AGENT_RUNTIME_LLM_SEND_PARALLEL_TOOL_CALLS and _LLM_MAX_TOKENS_FIELD."""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import Client


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"model": {"send_parallel_tool_calls": False, "max_tokens_field": "max_tokens"}}


async def test_an_endpoint_that_rejects_openais_newer_fields_gets_the_older_ones(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("ok"))
    request = user_message("s1", "hi")
    request.generation.max_output_tokens = 64

    chunks = [c async for c in client.runtime.StreamMessage(request)]

    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    body = model_server.requests[0]
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["tools"] and "parallel_tool_calls" not in body
