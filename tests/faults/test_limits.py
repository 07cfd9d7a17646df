"""Configured limits answer RESOURCE_EXHAUSTED and never hurt the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_runtime.api.event_servicer import CURSOR_METADATA
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from tests.support.databases import query
from tests.support.fake_model_server import (
    FakeModelServer,
    FloodingAnswer,
    stall_after,
    text_answer,
)
from tests.support.grpc_helpers import RichError, rich_error, tool_result, user_message
from tests.support.runtime_fixtures import Client
from tests.support.waiting import eventually


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


# -- streams: StreamMessage, ResumeStream and WatchEvents all count ----------------------------

KEYS = {"key-a-5e1f0c3b8d2a4f6e9b7c1d3a": "tenant-a", "key-b-0d2c4e6a8f1b3d5c7e9a0b2d": "tenant-b"}
KEYS |= {"key-c-7a9c1e3b5d7f9a1c3e5b7d9f": "tenant-c"}
TENANT_A, TENANT_B, TENANT_C = ((("x-api-key", key),) for key in KEYS)

Metadata = tuple[tuple[str, str], ...]


async def try_watch(client: Client, metadata: Metadata = ()) -> Any | None:
    """A WatchEvents stream that holds a slot, or None if the server refused it for a limit."""
    call = client.events.WatchEvents(ev.WatchEventsRequest(), metadata=metadata)
    if CURSOR_METADATA in dict(await call.initial_metadata()):  # sent once it has its slot
        return call
    code = await call.code()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code
    return None


async def watch(client: Client, metadata: Metadata = ()) -> Any:
    call = await try_watch(client, metadata)
    assert call is not None, "refused a stream within the limits"
    return call


async def stalled_turn(
    client: Client, model_server: FakeModelServer, session_id: str, metadata: Metadata = ()
) -> Any:
    """A StreamMessage whose model never finishes: it holds its slot until cancelled."""
    model_server.enqueue(stall_after("hold "))
    call = client.runtime.StreamMessage(user_message(session_id, "hold"), metadata=metadata)
    assert (await call.read()).WhichOneof("chunk") == "turn_started"
    return call


async def refusal(call: Any) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await call.read() is not grpc.aio.EOF:
            pass
    return rich_error(caught.value)


def assert_refused(error: RichError, reason: str, subject: str, limit: int) -> None:
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error.error_info is not None and error.error_info.reason == reason
    assert error.error_info.metadata["limit"] == str(limit)
    assert [s for s, _ in error.quota_violations] == [subject]
    assert error.retry_info is not None and error.retry_info.retry_delay.seconds >= 1


async def end(*calls: Any) -> None:
    """Cancel the calls and wait until each has ended on the client's side."""
    for call in calls:
        call.cancel()
    await asyncio.gather(*(asyncio.wait_for(_ended(c), 5) for c in calls))


async def admitted_again(client: Client, count: int, metadata: Metadata = ()) -> list[Any]:
    """Waits until `count` streams are held at once: slots given back are usable again.

    A cancelled call ends on the client at once; the server hears of it a moment later."""
    held: list[Any] = []

    async def one_more() -> bool:
        if (call := await try_watch(client, metadata)) is not None:
            held.append(call)
        return len(held) == count

    await eventually(one_more, what=f"{count} streams admitted")
    return held


class TestStreamLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"server": {"max_concurrent_streams": 2}}

    async def test_one_stream_too_many_is_refused_with_quota_failure_and_retry_info(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        held = [await stalled_turn(client, model_server, f"s{i}") for i in range(2)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.turn(user_message("s3", "one more"))
        assert_refused(rich_error(caught.value), "TOO_MANY_STREAMS", "server", 2)
        await end(*held)

    @pytest.mark.parametrize("refused", ["StreamMessage", "ResumeStream", "WatchEvents"])
    async def test_watch_events_streams_count_like_the_others(
        self, client: Client, model_server: FakeModelServer, refused: str
    ) -> None:
        held = [await watch(client), await watch(client)]
        third = {
            "StreamMessage": lambda: client.runtime.StreamMessage(user_message("s1", "hi")),
            "ResumeStream": lambda: client.runtime.ResumeStream(
                rt.ResumeStreamRequest(session_id="s1", turn_id="turn_x")
            ),
            "WatchEvents": lambda: client.events.WatchEvents(ev.WatchEventsRequest()),
        }[refused]()
        assert_refused(await refusal(third), "TOO_MANY_STREAMS", "server", 2)
        assert model_server.requests == []  # refused before anything else happened
        await end(*held)

    async def test_a_resume_stream_holds_a_slot_of_its_own(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        model_server.enqueue(stall_after("hold "))
        turn = client.runtime.StreamMessage(user_message("s1", "hold"))
        started = await turn.read()
        follower = client.runtime.ResumeStream(
            rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id)
        )
        assert (await follower.read()).WhichOneof("chunk") == "turn_started"
        assert_refused(
            await refusal(client.events.WatchEvents(ev.WatchEventsRequest())),
            "TOO_MANY_STREAMS",
            "server",
            2,
        )
        await end(follower, turn)

    async def test_streams_that_complete_give_their_slots_back_at_once(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        for i in range(3):
            model_server.enqueue(text_answer(f"answer {i}"))
            chunks = await client.turn(user_message("s1", f"question {i}"))
            assert chunks[-1].WhichOneof("chunk") == "turn_completed"
            replay = [
                c
                async for c in client.runtime.ResumeStream(
                    rt.ResumeStreamRequest(session_id="s1", turn_id=chunks[0].turn_id)
                )
            ]
            assert replay[-1].WhichOneof("chunk") == "turn_completed"
        # No waiting: a stream gives its slot back before its status goes out.
        await end(await watch(client), await watch(client))

    async def test_streams_that_fail_give_their_slots_back_at_once(self, client: Client) -> None:
        failing: list[Callable[[], Any]] = [
            lambda: client.runtime.StreamMessage(tool_result("nowhere", "call_1", "out")),
            lambda: client.runtime.ResumeStream(
                rt.ResumeStreamRequest(session_id="s1", turn_id="turn_missing")
            ),
            lambda: client.events.WatchEvents(ev.WatchEventsRequest(after_event_id=2**63)),
        ]
        for _ in range(2):
            for open_call in failing:
                error = await refusal(open_call())
                assert error.code in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ), error
        await end(await watch(client), await watch(client))

    async def test_streams_the_client_cancels_give_their_slots_back(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        await end(await stalled_turn(client, model_server, "s1"), await watch(client))
        await end(*await admitted_again(client, 2))

    async def test_streams_past_their_deadline_give_their_slots_back(self, client: Client) -> None:
        calls = [client.events.WatchEvents(ev.WatchEventsRequest(), timeout=1.0) for _ in "ab"]
        for call in calls:
            assert CURSOR_METADATA in dict(await call.initial_metadata())
        assert [await call.code() for call in calls] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        await end(*await admitted_again(client, 2))

    async def test_refused_streams_take_no_slot(self, client: Client) -> None:
        held = [await watch(client), await watch(client)]
        for _ in range(5):
            assert await try_watch(client) is None
        await end(*held)
        await end(*await admitted_again(client, 2))


class TestStreamLimitPerTenant:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        keys = ",".join(f"{key}={tenant}" for key, tenant in KEYS.items())
        return {
            "api_keys": {"keys": keys},
            "server": {"max_concurrent_streams": 4, "max_streams_per_tenant": 2},
        }

    async def test_a_tenant_at_its_limit_is_refused_and_the_others_are_served(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        a_held = [await stalled_turn(client, model_server, "s1", TENANT_A)]
        a_held.append(await watch(client, TENANT_A))
        for third in (
            client.events.WatchEvents(ev.WatchEventsRequest(), metadata=TENANT_A),
            client.runtime.StreamMessage(user_message("s2", "hi"), metadata=TENANT_A),
        ):
            assert_refused(await refusal(third), "TOO_MANY_TENANT_STREAMS", "tenant:tenant-a", 2)
        # Tenant A's limit leaves the rest of the process to the others.
        b_held = [await watch(client, TENANT_B), await watch(client, TENANT_B)]
        call = client.events.WatchEvents(ev.WatchEventsRequest(), metadata=TENANT_C)
        assert_refused(await refusal(call), "TOO_MANY_STREAMS", "server", 4)
        # What tenant A gives back, tenant C may take.
        await end(*a_held)
        c_held = await admitted_again(client, 2, TENANT_C)
        assert await try_watch(client, TENANT_A) is None  # the process is full again
        await end(*b_held, *c_held)
        await end(*await admitted_again(client, 2, TENANT_A))


async def _ended(call: Any) -> None:
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass


class TestAClientThatStopsReading:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"answers": {"max_answer_bytes": 64 * 1024 * 1024}}  # room for the flood below

    async def test_slows_its_own_model_read_instead_of_filling_memory(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        flood = FloodingAnswer(events=2_500, chars=16 * 1024)  # 40 MB of text
        model_server.enqueue(flood.response())
        call = client.runtime.StreamMessage(user_message("s1", "say a lot"))
        first = await call.read()
        assert first.HasField("turn_started")

        # The client reads nothing more. gRPC's flow-control windows fill, the turn can
        # send no more, the runtime stops taking the model's text, and the model's writes
        # wait: the runtime holds a few megabytes of the answer, not 40.
        async def model_waits() -> bool:
            return flood.stalled() or flood.finished

        await eventually(model_waits, within_seconds=30, what="the model's writes to wait")
        assert not flood.finished
        assert flood.written * flood.chars < 20 * 1024 * 1024
        call.cancel()  # the client goes away: the model request is closed
        await asyncio.wait_for(flood.closed.wait(), 10)


class TestAClientThatStopsReadingPastTheDeadline:
    @pytest.fixture
    def settings_overrides(self, stop: str) -> dict[str, Any]:
        # The 1 s deadline only where it is what stops the turn: with CancelTurn, a busy
        # machine slower than 1 s from the turn's start to the cancel would see TURN_TIMEOUT.
        turns = {"turn_timeout_seconds": 1.0} if stop == "deadline" else {}
        return {"answers": {"max_answer_bytes": 64 * 1024 * 1024}, "turns": turns}

    @pytest.mark.parametrize("stop", ["deadline", "CancelTurn"])
    async def test_its_turn_still_ends_and_frees_the_session(
        self, client: Client, model_server: FakeModelServer, database_url: str, stop: str
    ) -> None:
        # A turn waiting to send to a client that reads nothing is stopped where it waits
        # (a few seconds after its deadline or CancelTurn), as one waiting for the model is.
        flood = FloodingAnswer(events=2_500, chars=16 * 1024)
        model_server.enqueue(flood.response())
        call = client.runtime.StreamMessage(user_message("s1", "say a lot"))
        turn_id = (await call.read()).turn_id
        if stop == "CancelTurn":
            await client.runtime.CancelTurn(rt.CancelTurnRequest(session_id="s1", turn_id=turn_id))

        async def session_free() -> bool:
            rows = await query(database_url, "SELECT running_turn_id FROM sessions")
            return rows == [(None,)]

        await eventually(session_free, within_seconds=30, what="the stalled turn to end")
        await asyncio.wait_for(flood.closed.wait(), 10)  # its model request was closed
        expected = ("cancelled", None) if stop == "CancelTurn" else ("failed", "TURN_TIMEOUT")
        assert await query(database_url, "SELECT status, error_reason FROM turns") == [expected]
        call.cancel()
