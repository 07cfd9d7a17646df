"""A turn whose process is killed (-9) ends, for every replay, retry and follower, on SQLite and
PostgreSQL.

A real server process runs a turn while the real model endpoint streams its first words and
then hangs; the process is SIGKILLed. The turn is marked interrupted either by the same
instance starting again (its start-up sweep) or, once the turn's lease has run out, by another
instance. Its persisted log then ends with Error{UNAVAILABLE, TURN_INTERRUPTED, retryable} and
TurnCompleted{ERROR}, after a gap in the seqs (INTERRUPTION_SEQ_GAP): a client that resumes
after the last delta it saw (deltas are never persisted) still gets them. A retry with the
same client_message_id replays that end; the Python client raises TurnInterrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from agent_runtime.application.turn_recovery import INTERRUPTION_SEQ_GAP
from agent_runtime.client import (
    AgentRuntimeClient,
    BlockingAgentRuntimeClient,
    RetryPolicy,
    TurnInterrupted,
)
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import query
from tests.support.fake_model_server import FakeModelServer, stall_after, text_answer
from tests.support.grpc_helpers import kinds, user_message
from tests.support.runtime_fixtures import Client, connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

LEASE_SECONDS = "1"
STREAMED = "Hello there, "
# Retries that outlast a server's restart (a new process: a few seconds on a busy machine).
PATIENT = RetryPolicy(max_attempts=100, initial_backoff=0.1, max_backoff=0.5)


@dataclass
class Interrupted:
    """A turn a kill interrupted, and the server that serves it now."""

    server: ServerProcess
    started: rt.StreamChunk
    last_seen_seq: int  # the seq of the last delta the client received before the kill
    request: rt.StreamMessageRequest


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


def _env(model: FakeModelServer, instance: str) -> dict[str, str]:
    return {
        "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
        "AGENT_RUNTIME_INSTANCE_ID": instance,
        "AGENT_RUNTIME_LEASE_SECONDS": LEASE_SECONDS,
    }


async def _read_until_streamed(
    call: grpc.aio.UnaryStreamCall[Any, rt.StreamChunk],
) -> tuple[rt.StreamChunk, int]:
    """TurnStarted, and the seq of the delta that completes STREAMED."""
    started = await call.read()
    assert isinstance(started, rt.StreamChunk) and started.HasField("turn_started")
    text = ""
    while text != STREAMED:
        chunk = await call.read()
        assert isinstance(chunk, rt.StreamChunk) and chunk.HasField("assistant_delta"), chunk
        text += chunk.assistant_delta.text
    return started, chunk.seq


@pytest.fixture(params=["restart", "lease"])
async def interrupted(
    request: pytest.FixtureRequest, database_url: str, model: FakeModelServer
) -> AsyncIterator[Interrupted]:
    """restart: the same instance starts again; lease: another instance reclaims the turn once
    its lease has run out."""
    model.enqueue(stall_after(STREAMED))
    dying = ServerProcess(database_url, env=_env(model, "instance-a"))
    await dying.start()
    turn = user_message("s1", "hello", client_message_id="key-1")
    async with grpc.aio.insecure_channel(dying.address) as channel:
        call = connect(channel).runtime.StreamMessage(turn)
        started, last_seen = await _read_until_streamed(call)
        assert await dying.kill_hard() == -9

    survivor_id = "instance-a" if request.param == "restart" else "instance-b"
    survivor = ServerProcess(database_url, env=_env(model, survivor_id))
    await survivor.start()
    try:
        async with grpc.aio.insecure_channel(survivor.address) as channel:
            sessions = connect(channel).sessions

            async def freed() -> bool:
                got = await sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
                return not got.session.running_turn_id

            # On a restart the start-up sweep has freed it already; else the lease runs out.
            await eventually(freed, within_seconds=20, what="the turn to be interrupted")
        yield Interrupted(survivor, started, last_seen, turn)
    finally:
        await survivor.kill_hard()


async def _resume(client: Client, turn_id: str, after_seq: int) -> list[rt.StreamChunk]:
    request = rt.ResumeStreamRequest(session_id="s1", turn_id=turn_id, after_seq=after_seq)
    return [chunk async for chunk in client.runtime.ResumeStream(request)]


def _assert_the_end(chunks: list[rt.StreamChunk], after_seq: int) -> None:
    error, completed = chunks
    assert (error.error.code, error.error.reason, error.error.retryable) == (
        "UNAVAILABLE",
        "TURN_INTERRUPTED",
        True,
    )
    assert completed.turn_completed.stop_reason == rt.STOP_REASON_ERROR
    assert after_seq < error.seq and completed.seq == error.seq + 1


async def test_resume_and_retry_of_an_interrupted_turn_see_it_end(
    interrupted: Interrupted, database_url: str, model: FakeModelServer
) -> None:
    turn_id = interrupted.started.turn_id
    async with grpc.aio.insecure_channel(interrupted.server.address) as channel:
        client = connect(channel)
        # After the last delta the client saw: the end still comes.
        after_delta = await _resume(client, turn_id, interrupted.last_seen_seq)
        _assert_the_end(after_delta, interrupted.last_seen_seq)
        assert after_delta[0].seq == 1 + INTERRUPTION_SEQ_GAP  # after TurnStarted, the last kept
        # From the start: what was persisted, then the end.
        replayed = await _resume(client, turn_id, 0)
        assert kinds(replayed) == ["turn_started", "error", "turn_completed"]
        assert replayed[0] == interrupted.started
        assert replayed[1:] == after_delta
        # A retry with the same key replays the interruption; it starts nothing.
        retried = [chunk async for chunk in client.runtime.StreamMessage(interrupted.request)]
        assert retried == replayed
        assert len(model.requests) == 1

        # A new input (a new key) runs a new turn; the interrupted one's input stayed.
        model.enqueue(text_answer("I am back"))
        fresh = [c async for c in client.runtime.StreamMessage(user_message("s1", "there?"))]
        assert fresh[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
        assert [m.content for m in page.messages] == ["hello", "there?", "I am back"]

    assert await query(
        database_url,
        "SELECT status, stop_reason, error_reason FROM turns WHERE turn_id = :t",
        t=turn_id,
    ) == [("interrupted", "error", "TURN_INTERRUPTED")]


async def test_the_python_client_raises_turn_interrupted(interrupted: Interrupted) -> None:
    turn_id = interrupted.started.turn_id
    async with AgentRuntimeClient(interrupted.server.address) as client:
        with pytest.raises(TurnInterrupted) as resumed:
            async for _ in client.resume_stream("s1", turn_id, interrupted.last_seen_seq):
                pass
        seen: list[rt.StreamChunk] = []
        with pytest.raises(TurnInterrupted) as retried:
            async for chunk in client.stream_message("s1", "hello", client_message_id="key-1"):
                seen.append(chunk)
    assert kinds(seen) == ["turn_started"]  # then the error, raised instead of yielded

    def blocking_resume() -> TurnInterrupted:
        with (
            BlockingAgentRuntimeClient(interrupted.server.address) as client,
            pytest.raises(TurnInterrupted) as caught,
        ):
            list(client.resume_stream("s1", turn_id))
        return caught.value

    blocked = await asyncio.to_thread(blocking_resume)
    for caught in (resumed.value, retried.value, blocked):
        assert (caught.code, caught.reason) == (grpc.StatusCode.UNAVAILABLE, "TURN_INTERRUPTED")
        assert caught.metadata == {"session_id": "s1", "turn_id": turn_id}


async def test_a_python_client_streaming_through_the_kill_recovers_into_turn_interrupted(
    database_url: str, model: FakeModelServer
) -> None:
    """The client's own recovery: its stream breaks with the process, it retries ResumeStream
    after the last seq it got until the instance is back (on the same address), and then
    raises TurnInterrupted instead of ending silently."""
    model.enqueue(stall_after(STREAMED))
    dying = ServerProcess(database_url, env=_env(model, "instance-a"))
    await dying.start()
    streamed = asyncio.Event()
    seen: list[rt.StreamChunk] = []

    async with AgentRuntimeClient(dying.address, retry=PATIENT) as client:

        async def converse() -> None:
            async for chunk in client.stream_message("s1", "hello", client_message_id="key-1"):
                seen.append(chunk)
                text = "".join(c.assistant_delta.text for c in seen)
                if text == STREAMED:
                    streamed.set()

        conversing = asyncio.create_task(converse())
        await asyncio.wait_for(streamed.wait(), 20)
        await dying.kill_hard()
        back = ServerProcess(
            database_url,
            env={**_env(model, "instance-a"), "AGENT_RUNTIME_LISTEN": dying.address},
        )
        await back.start()
        try:
            with pytest.raises(TurnInterrupted) as caught:
                await asyncio.wait_for(conversing, 30)
        finally:
            await back.kill_hard()
    assert caught.value.metadata["turn_id"] == seen[0].turn_id
    assert kinds(seen) == ["turn_started"] + ["assistant_delta"] * (len(seen) - 1)
