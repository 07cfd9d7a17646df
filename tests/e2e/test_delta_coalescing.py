"""Deltas that pile up while the runtime is busy leave as one chunk; an idle runtime sends
each token at once. Real gRPC server, real HTTP model endpoint."""

from __future__ import annotations

import asyncio

import grpc

from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.fake_model_server import FakeModelServer, stepped_answer, text_answer
from tests.support.grpc_helpers import kinds, user_message
from tests.support.runtime_fixtures import Client


async def test_a_burst_of_tokens_is_sent_as_fewer_larger_deltas(
    client: Client, model_server: FakeModelServer
) -> None:
    # 300 tokens, each its own HTTP chunk, written in one go: they arrive faster than the
    # runtime can send a chunk per token, so the read-ahead gathers them.
    text = "".join(f"token{i} " for i in range(300)).rstrip()
    model_server.enqueue(text_answer(text))
    chunks = [c async for c in client.runtime.StreamMessage(user_message("s1", "burst"))]

    deltas = [c.assistant_delta.text for c in chunks if c.HasField("assistant_delta")]
    assert kinds(chunks) == ["turn_started"] + ["assistant_delta"] * len(deltas) + [
        "assistant_message",
        "turn_completed",
    ]
    assert 1 <= len(deltas) < 300
    assert "".join(deltas) == text
    assert chunks[-2].assistant_message.content == text
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))


async def test_the_first_token_is_sent_before_the_model_sends_more(
    client: Client, model_server: FakeModelServer
) -> None:
    more = asyncio.Event()
    model_server.enqueue(stepped_answer([["Hello "], ["world"]], [more]))
    call = client.runtime.StreamMessage(user_message("s1", "hi"))
    started = await call.read()
    assert isinstance(started, rt.StreamChunk) and started.HasField("turn_started")
    first = await call.read()  # the model sends nothing more until `more` is set
    assert isinstance(first, rt.StreamChunk) and first.assistant_delta.text == "Hello "

    more.set()
    rest = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        rest.append(chunk)
    assert "".join(c.assistant_delta.text for c in rest) == "world"
    assert rest[-2].assistant_message.content == "Hello world"
    assert rest[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
