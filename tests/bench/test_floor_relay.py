"""The floor relay (benchmarks/floor_relay.py) on each HTTP client: the same chunks, the same
errors, and the model connection pooled or closed the same way.

In-process, against the tests' scripted model server: a fraction of a second per case.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc
from benchmarks.floor_relay import (
    HTTP_CLIENTS,
    FloorRelay,
    HttpClientKind,
    grpc_server,
    open_posts,
)
from tests.support.fake_model_server import (
    FakeModelServer,
    drop_connection_after,
    http_error,
    stall_after,
    text_answer,
)
from tests.support.grpc_helpers import user_message

pytestmark = pytest.mark.parametrize("kind", HTTP_CLIENTS)


@contextlib.asynccontextmanager
async def floor(
    kind: HttpClientKind, model_url: str
) -> AsyncIterator[rt_grpc.AgentRuntimeServiceStub]:
    async with contextlib.AsyncExitStack() as stack:
        posts = await open_posts(stack, kind, f"{model_url}/chat/completions", 0, 1)
        server = grpc_server(FloorRelay(posts))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield rt_grpc.AgentRuntimeServiceStub(channel)
        finally:
            await server.stop(None)


async def chunks(stub: rt_grpc.AgentRuntimeServiceStub) -> list[rt.StreamChunk]:
    call = stub.StreamMessage(user_message("ses_floor", "hello"), timeout=10)
    return [chunk async for chunk in call]


async def test_relays_one_delta_per_token_then_turn_completed_on_one_connection(
    kind: HttpClientKind,
) -> None:
    async with FakeModelServer() as model, floor(kind, model.base_url) as stub:
        model.enqueue(text_answer("one two three"), text_answer("four"))
        first = await chunks(stub)
        second = await chunks(stub)

    assert [chunk.assistant_delta.text for chunk in first[:-1]] == ["one ", "two ", "three"]
    assert [chunk.seq for chunk in first] == [1, 2, 3, 4]
    assert first[-1].turn_completed.usage.completion_tokens == 3
    assert first[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert [chunk.WhichOneof("chunk") for chunk in second] == [
        "assistant_delta",
        "turn_completed",
    ]
    assert model.requests[0]["stream"] is True
    assert model.requests[0]["messages"] == [{"role": "user", "content": "hello"}]
    # Each body was read to its end, so the second call reused the first one's connection.
    assert model.connections_opened == 1


async def test_an_http_error_is_unavailable_and_the_next_call_is_served(
    kind: HttpClientKind,
) -> None:
    async with FakeModelServer() as model, floor(kind, model.base_url) as stub:
        model.enqueue(http_error(503), text_answer("fine"))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await chunks(stub)
        after = await chunks(stub)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == "model answered HTTP 503"
    assert after[0].assistant_delta.text == "fine"


async def test_a_dropped_stream_is_unavailable_after_the_tokens_that_came(
    kind: HttpClientKind,
) -> None:
    async with FakeModelServer() as model, floor(kind, model.base_url) as stub:
        model.enqueue(drop_connection_after("one two three", 2))
        call = stub.StreamMessage(user_message("ses_floor", "hello"), timeout=10)
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for chunk in call:
                received.append(chunk.assistant_delta.text)

    assert received == ["one ", "two "]
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (failed.value.details() or "").startswith("model call failed: ")


async def test_an_unreachable_model_is_unavailable(kind: HttpClientKind) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with floor(kind, f"http://127.0.0.1:{port}/v1") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await chunks(stub)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (failed.value.details() or "").startswith("model call failed: ")


async def test_a_call_cancelled_mid_answer_closes_the_model_connection(
    kind: HttpClientKind,
) -> None:
    disconnected = asyncio.Event()
    async with FakeModelServer() as model, floor(kind, model.base_url) as stub:
        model.enqueue(stall_after("one", on_disconnect=disconnected.set))
        call = stub.StreamMessage(user_message("ses_floor", "hello"), timeout=10)
        first = await call.read()
        assert isinstance(first, rt.StreamChunk)
        assert first.assistant_delta.text == "one"
        call.cancel()
        # The model learns the answer is no longer wanted: the floor closed its connection.
        async with asyncio.timeout(10):
            await disconnected.wait()
