"""ResumeStream and CancelTurn, and a client that disappears mid-stream."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import query
from tests.support.fake_model_server import (
    FakeModelServer,
    gated_answer,
    stall_after,
    text_answer,
)
from tests.support.grpc_helpers import kinds, read_rest, rich_error, user_message
from tests.support.runtime_fixtures import Client
from tests.support.waiting import eventually


async def read_n(call: Any, n: int) -> list[rt.StreamChunk]:
    return [await call.read() for _ in range(n)]


async def read_text(call: Any, text: str) -> list[rt.StreamChunk]:
    """TurnStarted and deltas until they spell `text` (tokens that arrive together may come
    as one delta)."""
    chunks = [await call.read()]
    while "".join(c.assistant_delta.text for c in chunks) != text:
        chunks.append(await call.read())
    return chunks


async def test_resume_follows_a_running_turn_then_replays_it_with_the_same_seqs(
    client: Client, model_server: FakeModelServer
) -> None:
    gate = asyncio.Event()
    model_server.enqueue(gated_answer(["one ", "two ", "three"], gate))
    original = client.runtime.StreamMessage(user_message("s1", "count"))
    head = await read_n(original, 2)  # TurnStarted, first delta
    turn_id = head[0].turn_id

    follower = client.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=turn_id, after_seq=1)
    )
    first_followed = await follower.read()
    assert first_followed == head[1]
    gate.set()
    rest = await read_rest(original)
    followed = [first_followed, *await read_rest(follower)]
    assert followed == head[1:] + rest
    assert kinds(rest)[-2:] == ["assistant_message", "turn_completed"]

    replay = [
        c
        async for c in client.runtime.ResumeStream(
            rt.ResumeStreamRequest(session_id="s1", turn_id=turn_id)
        )
    ]
    everything = {c.seq: c for c in head + rest}
    assert kinds(replay) == ["turn_started", "assistant_message", "turn_completed"]
    assert all(everything[c.seq] == c for c in replay)
    after = [
        c
        async for c in client.runtime.ResumeStream(
            rt.ResumeStreamRequest(session_id="s1", turn_id=turn_id, after_seq=replay[1].seq)
        )
    ]
    assert kinds(after) == ["turn_completed"]


@pytest.mark.parametrize(("session_id", "turn_id"), [("s1", "turn_nope"), ("other", None)])
async def test_resume_of_an_unknown_turn_is_not_found(
    client: Client, model_server: FakeModelServer, session_id: str, turn_id: str | None
) -> None:
    model_server.enqueue(text_answer("hi"))
    chunks = await client.turn(user_message("s1", "hello"))
    request = rt.ResumeStreamRequest(session_id=session_id, turn_id=turn_id or chunks[0].turn_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in client.runtime.ResumeStream(request):
            pass
    assert rich_error(caught.value).code == grpc.StatusCode.NOT_FOUND


async def test_cancel_turn_stops_the_model_keeps_the_partial_text_and_frees_the_session(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    upstream_closed = asyncio.Event()
    model_server.enqueue(stall_after("half an ", on_disconnect=upstream_closed.set))
    call = client.runtime.StreamMessage(user_message("s1", "write an essay"))
    head = await read_text(call, "half an ")
    turn_id = head[0].turn_id

    await client.runtime.CancelTurn(rt.CancelTurnRequest(session_id="s1", turn_id=turn_id))
    rest = await read_rest(call)
    assert kinds(rest) == ["turn_completed"]
    assert rest[0].turn_completed.stop_reason == rt.STOP_REASON_CANCELLED
    await asyncio.wait_for(upstream_closed.wait(), 5)

    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [(m.content, m.incomplete) for m in page.messages] == [
        ("write an essay", False),
        ("half an ", True),
    ]
    assert await query(database_url, "SELECT status FROM turns") == [("cancelled",)]
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await client.runtime.CancelTurn(rt.CancelTurnRequest(session_id="s1", turn_id=turn_id))
    error = rich_error(again.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.error_info is not None and error.error_info.reason == "TURN_NOT_RUNNING"

    model_server.enqueue(text_answer("next"))
    assert kinds(await client.turn(user_message("s1", "shorter please")))[-1] == "turn_completed"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await client.runtime.CancelTurn(rt.CancelTurnRequest(session_id="s1", turn_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_client_that_disappears_mid_stream(
    client: Client, model_server: FakeModelServer
) -> None:
    upstream_closed = asyncio.Event()
    model_server.enqueue(stall_after("so far ", on_disconnect=upstream_closed.set))
    call = client.runtime.StreamMessage(user_message("s1", "long answer please"))
    await read_text(call, "so far ")
    call.cancel()
    # The upstream request is closed within a short bound...
    await asyncio.wait_for(upstream_closed.wait(), 5)

    async def session_free() -> bool:
        got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
        return not got.session.running_turn_id

    await eventually(session_free, what="the session to be freed")
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [(m.content, m.incomplete) for m in page.messages] == [
        ("long answer please", False),
        ("so far ", True),
    ]
    model_server.enqueue(text_answer("ok"))
    assert kinds(await client.turn(user_message("s1", "again")))[-1] == "turn_completed"
