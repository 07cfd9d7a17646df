"""Retry storms, racing requests and reused idempotency keys."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import kinds, rich_error, user_message
from tests.support.races import race_for_one_session
from tests.support.runtime_fixtures import Client


async def test_a_retry_storm_runs_one_turn_and_every_stream_sees_the_same_chunks(
    client: Client, model_server: FakeModelServer
) -> None:
    all_started = asyncio.Event()

    async def hold_until_everyone_is_in(_body: dict[str, Any]) -> None:
        await all_started.wait()

    model_server.on_request = hold_until_everyone_is_in
    model_server.enqueue(text_answer("exactly once"))
    started = 0

    async def send() -> list[rt.StreamChunk]:
        nonlocal started
        received = []
        call = client.runtime.StreamMessage(
            user_message("s1", "do it once", client_message_id="key-1")
        )
        async for chunk in call:
            received.append(chunk)
            if chunk.HasField("turn_started"):
                started += 1
                if started == 20:
                    all_started.set()
        return received

    streams = await asyncio.wait_for(asyncio.gather(*(send() for _ in range(20))), 30)
    assert all(s == streams[0] for s in streams)
    assert kinds(streams[0])[-2:] == ["assistant_message", "turn_completed"]
    assert len(model_server.requests) == 1
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [m.content for m in page.messages] == ["do it once", "exactly once"]

    # Later retries replay the finished turn from what was persisted, same seq numbers.
    replay = await client.turn(user_message("s1", "do it once", client_message_id="key-1"))
    original = {c.seq: c for c in streams[0]}
    assert kinds(replay) == ["turn_started", "assistant_message", "turn_completed"]
    assert all(original[c.seq] == c for c in replay)


async def test_same_key_with_different_content_is_refused(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("first"))
    await client.turn(user_message("s1", "original", client_message_id="key-1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.turn(user_message("s1", "something else", client_message_id="key-1"))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.error_info is not None and error.error_info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert [f for f, _ in error.field_violations] == ["client_message_id"]
    # The same key in another session is another key.
    model_server.enqueue(text_answer("second"))
    other = await client.turn(user_message("s2", "something else", client_message_id="key-1"))
    assert other[-2].assistant_message.content == "second"


async def test_fifty_racing_requests_on_one_session_run_exactly_one_turn(
    client: Client, model_server: FakeModelServer
) -> None:
    release = asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        await release.wait()

    model_server.on_request = hold
    model_server.default_response = text_answer("the one")
    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="s1"))

    await race_for_one_session([client], "s1", 50, release)
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert len(page.messages) == 2
