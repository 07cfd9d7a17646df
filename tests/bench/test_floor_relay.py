"""The floor relay (benchmarks/floor_relay.py): the runtime's framing of a turn over the
runtime's own model client, and its failures as the runtime reports them.

In-process, against the tests' scripted model server: a fraction of a second per case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from agent_runtime.config import Settings
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc
from benchmarks.floor_relay import floor_relay, grpc_server
from tests.support.fake_model_server import (
    FakeModelServer,
    drop_connection_after,
    http_error,
    stall_after,
    text_answer,
)
from tests.support.grpc_helpers import user_message


@contextlib.asynccontextmanager
async def floor(model_url: str) -> AsyncIterator[rt_grpc.AgentRuntimeServiceStub]:
    # One attempt per call, so that a failure is seen as it is, not retried.
    settings = Settings.model_validate({"model": {"base_url": model_url, "max_attempts": 1}})
    async with floor_relay(settings) as relay:
        server = grpc_server(relay)
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


def kinds(received: list[rt.StreamChunk]) -> list[str]:
    """The chunk kinds in order, a run of deltas counted as one."""
    out: list[str] = []
    for chunk in received:
        kind = chunk.WhichOneof("chunk") or ""
        if not (out and out[-1] == kind == "assistant_delta"):
            out.append(kind)
    return out


async def test_frames_a_turn_as_the_runtime_does_on_one_model_connection() -> None:
    async with FakeModelServer() as model, floor(model.base_url) as stub:
        model.enqueue(text_answer("one two three"), text_answer("four"))
        first = await chunks(stub)
        second = await chunks(stub)

    for received in (first, second):
        assert kinds(received) == [
            "turn_started",
            "assistant_delta",
            "assistant_message",
            "turn_completed",
        ]
        assert [chunk.seq for chunk in received] == list(range(1, len(received) + 1))
        assert {chunk.session_id for chunk in received} == {"ses_floor"}
        assert len({chunk.turn_id for chunk in received}) == 1
    deltas = [c.assistant_delta.text for c in first if c.WhichOneof("chunk") == "assistant_delta"]
    assert all(deltas)
    assert "".join(deltas) == "one two three"
    assert first[-2].assistant_message.content == "one two three"
    assert first[0].turn_started.turn_id == first[0].turn_id
    assert first[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    usage = first[-1].turn_completed.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 7, 12)
    assert first[0].turn_id != second[0].turn_id
    # The request is the runtime client's: streamed, usage asked for, the user message only.
    assert model.requests[0]["stream"] is True
    assert model.requests[0]["stream_options"] == {"include_usage": True}
    assert model.requests[0]["messages"] == [{"role": "user", "content": "hello"}]
    # Each body was read to its end, so the second call reused the first one's connection.
    assert model.connections_opened == 1


async def test_a_rejected_request_ends_the_turn_with_an_error_chunk() -> None:
    async with FakeModelServer() as model, floor(model.base_url) as stub:
        model.enqueue(http_error(400), text_answer("fine"))
        failed = await chunks(stub)
        after = await chunks(stub)

    assert kinds(failed) == ["turn_started", "error"]
    assert failed[-1].error.reason == "MODEL_HTTP_400"
    assert failed[-1].error.retryable is False
    assert after[-2].assistant_message.content == "fine"


async def test_a_dropped_stream_is_an_error_chunk_after_the_text_that_came() -> None:
    async with FakeModelServer() as model, floor(model.base_url) as stub:
        model.enqueue(drop_connection_after("one two three", 2))
        received = await chunks(stub)

    assert kinds(received) == ["turn_started", "assistant_delta", "error"]
    text = "".join(c.assistant_delta.text for c in received if c.HasField("assistant_delta"))
    assert text == "one two "
    assert received[-1].error.reason == "MODEL_STREAM_INTERRUPTED"
    assert received[-1].error.retryable is True


async def test_an_unreachable_model_is_an_error_chunk() -> None:
    async with FakeModelServer() as model:
        url = model.base_url  # nobody listens there once the server has stopped
    async with floor(url) as stub:
        received = await chunks(stub)

    assert kinds(received) == ["turn_started", "error"]
    assert received[-1].error.reason == "MODEL_UNREACHABLE"


async def test_a_call_cancelled_mid_answer_closes_the_model_connection() -> None:
    disconnected = asyncio.Event()
    async with FakeModelServer() as model, floor(model.base_url) as stub:
        model.enqueue(stall_after("one", on_disconnect=disconnected.set))
        call = stub.StreamMessage(user_message("ses_floor", "hello"), timeout=10)
        started = await call.read()
        assert isinstance(started, rt.StreamChunk)
        assert started.HasField("turn_started")
        first = await call.read()
        assert isinstance(first, rt.StreamChunk)
        assert first.assistant_delta.text == "one"
        call.cancel()
        # The model learns the answer is no longer wanted: the floor closed its connection.
        async with asyncio.timeout(10):
            await disconnected.wait()
