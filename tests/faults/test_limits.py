"""Configured limits answer RESOURCE_EXHAUSTED and never hurt the server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.fake_model_server import FakeModelServer, stall_after, text_answer
from tests.support.grpc_helpers import rich_error, user_message
from tests.support.runtime_fixtures import Client


async def assert_serving(client: Client) -> None:
    reply = await health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_request_over_the_transport_limit_is_resource_exhausted(
    client: Client, model_server: FakeModelServer
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.turn(user_message("s1", "x" * (5 * 1024 * 1024)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_serving(client)
    model_server.enqueue(text_answer("fine"))
    assert (await client.turn(user_message("s1", "small")))[-2].assistant_message.content == "fine"


class TestStreamLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"server": {"max_concurrent_streams": 2}}

    async def test_one_stream_too_many_is_refused_with_retry_info(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        model_server.enqueue(stall_after("a "), stall_after("b "))
        held = [client.runtime.StreamMessage(user_message(f"s{i}", "hold")) for i in range(2)]
        for call in held:
            await call.read()  # both streams are open
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.turn(user_message("s3", "one more"))
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.error_info is not None and error.error_info.reason == "TOO_MANY_STREAMS"
        assert error.retry_info is not None
        for call in held:
            call.cancel()
        await asyncio.gather(*(asyncio.wait_for(_ended(c), 5) for c in held))


async def _ended(call: Any) -> None:
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
