"""API keys and tenants over a real port: who may call, and what each tenant can see."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from agent_runtime import bootstrap
from agent_runtime.api.errors import ERROR_DOMAIN
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us
from tests.support.grpc_helpers import RichError, decision, kinds, rich_error, user_message
from tests.support.runtime_fixtures import Client

KEY_A = "key-a-7c1e5f0b9a2d4e6f8a1b3c5d"
KEY_B = "key-b-2f4a6c8e0b1d3f5a7c9e1b3d"
KEY_C = "key-c-9d8c7b6a5f4e3d2c1b0a9f8e"
WRONG_KEY = "key-x-not-configured-anywhere"
KEYS = {KEY_A: "tenant-a", KEY_B: "tenant-b", KEY_C: "tenant-c"}

Metadata = tuple[tuple[str, str], ...]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def api_key(key: str) -> Metadata:
    return (("x-api-key", key),)


A, B, C = bearer(KEY_A), bearer(KEY_B), api_key(KEY_C)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The built-in fake model: it answers at once and can ask for an approval on request.
    keys = ",".join(f"{key}={tenant}" for key, tenant in KEYS.items())
    return {"api_keys": {"keys": keys}, "model": {"base_url": ""}}


async def failure(call: Callable[[], Awaitable[object]]) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    return rich_error(caught.value)


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def same_error(left: RichError, right: RichError) -> bool:
    return (
        left.code == right.code
        and left.message == right.message
        and left.error_info == right.error_info
        and left.field_violations == right.field_violations
    )


# -- who may call ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [((), "API_KEY_MISSING"), (bearer(WRONG_KEY), "API_KEY_INVALID")],
    ids=["no key", "wrong key"],
)
async def test_calls_without_a_valid_key_are_unauthenticated_unary_and_streaming(
    client: Client, metadata: Metadata, reason: str
) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.sessions.ListSessions(ses.ListSessionsRequest(), metadata=metadata),
        lambda: client.sessions.CreateSession(ses.CreateSessionRequest(), metadata=metadata),
        lambda: drain(client.runtime.StreamMessage(user_message("s1", "hi"), metadata=metadata)),
        lambda: drain(
            client.runtime.ResumeStream(
                rt.ResumeStreamRequest(session_id="s1", turn_id="t1"), metadata=metadata
            )
        ),
        lambda: drain(client.events.WatchEvents(ev.WatchEventsRequest(), metadata=metadata)),
    ]
    for call in calls:
        error = await failure(call)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.error_info is not None
        assert (error.error_info.reason, error.error_info.domain) == (reason, ERROR_DOMAIN)
    # Nothing was done on the caller's behalf.
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest(), metadata=A)
    assert list(listed.sessions) == []


async def test_bearer_and_x_api_key_both_authenticate(client: Client) -> None:
    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="s1"), metadata=A)
    by_header = await client.sessions.GetSession(
        ses.GetSessionRequest(session_id="s1"), metadata=api_key(KEY_A)
    )
    assert by_header.session.session_id == "s1"
    lower = await client.sessions.GetSession(
        ses.GetSessionRequest(session_id="s1"), metadata=(("authorization", f"bearer {KEY_A}"),)
    )
    assert lower.session.session_id == "s1"
    chunks = await drain(client.runtime.StreamMessage(user_message("s1", "hi"), metadata=C))
    assert kinds(chunks)[-1] == "turn_completed"  # tenant C's own s1, created on first use


async def test_health_and_reflection_need_no_key(runtime: bootstrap.RunningRuntime) -> None:
    address = f"127.0.0.1:{runtime.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def reflected_services() -> list[str]:
        with grpc.insecure_channel(address) as sync_channel:
            return sorted(ProtoReflectionDescriptorDatabase(sync_channel).get_services())

    assert "agent_runtime.v1.SessionService" in await asyncio.to_thread(reflected_services)


# -- what each tenant can see ------------------------------------------------------------------


async def test_another_tenants_session_is_not_found_exactly_like_a_missing_one(
    client: Client,
) -> None:
    runtime, sessions = client.runtime, client.sessions
    get = ses.GetSessionRequest(session_id="shared")
    messages = ses.ListMessagesRequest(session_id="shared")
    approvals = ses.ListPendingApprovalsRequest(session_id="shared")
    delete = ses.DeleteSessionRequest(session_id="shared")
    turns = ses.ListTurnsRequest(session_id="shared")
    revoke = ses.RevokeApprovalGrantRequest(session_id="shared", grant_id="grt_1")

    # What tenant B is told while no tenant has a session "shared"...
    before = [
        await failure(lambda: sessions.GetSession(get, metadata=B)),
        await failure(lambda: sessions.ListMessages(messages, metadata=B)),
        await failure(lambda: sessions.ListPendingApprovals(approvals, metadata=B)),
        await failure(lambda: sessions.DeleteSession(delete, metadata=B)),
        await failure(lambda: sessions.ListTurns(turns, metadata=B)),
        await failure(lambda: sessions.RevokeApprovalGrant(revoke, metadata=B)),
    ]
    assert all(e.code == grpc.StatusCode.NOT_FOUND for e in before)

    # ...tenant A creates it, with a turn and a pending approval...
    request = user_message("shared", '/tool write_file {"path": "a.md", "content": "x"}')
    streamed = await drain(runtime.StreamMessage(request, metadata=A))
    turn = [c for c in streamed if not c.HasField("tool_call_delta")]  # the arguments, written
    assert kinds(turn) == ["turn_started", "tool_call", "turn_completed"]
    turn_id, call_id = turn[0].turn_id, turn[1].tool_call.call_id

    # ...and B is told exactly the same, to the byte.
    after = [
        await failure(lambda: sessions.GetSession(get, metadata=B)),
        await failure(lambda: sessions.ListMessages(messages, metadata=B)),
        await failure(lambda: sessions.ListPendingApprovals(approvals, metadata=B)),
        await failure(lambda: sessions.DeleteSession(delete, metadata=B)),
        await failure(lambda: sessions.ListTurns(turns, metadata=B)),
        await failure(lambda: sessions.RevokeApprovalGrant(revoke, metadata=B)),
    ]
    for old, new in zip(before, after, strict=True):
        assert same_error(old, new), (old, new)

    # A's turn: B can neither follow nor cancel it, nor answer its approval; a turn id that
    # never existed gets the same answer.
    def resume(turn: str) -> Callable[[], Awaitable[object]]:
        request = rt.ResumeStreamRequest(session_id="shared", turn_id=turn)
        return lambda: drain(runtime.ResumeStream(request, metadata=B))

    def cancel(turn: str) -> Callable[[], Awaitable[object]]:
        request = rt.CancelTurnRequest(session_id="shared", turn_id=turn)
        return lambda: runtime.CancelTurn(request, metadata=B)

    missing_turn = "turn_" + "0" * (len(turn_id) - 5)
    for action in (resume, cancel):
        theirs, missing = await failure(action(turn_id)), await failure(action(missing_turn))
        assert theirs.code == missing.code == grpc.StatusCode.NOT_FOUND
        assert theirs.message.replace(turn_id, "T") == missing.message.replace(missing_turn, "T")
        assert theirs.error_info is not None and missing.error_info is not None
        assert theirs.error_info.reason == missing.error_info.reason == "TURN_NOT_FOUND"

    answer = decision("shared", call_id, rt.DECISION_APPROVE)
    refused = await failure(lambda: drain(runtime.StreamMessage(answer, metadata=B)))
    assert same_error(refused, before[0])  # SESSION_NOT_FOUND for "shared", as before
    their_turn = ses.GetTurnRequest(session_id="shared", turn_id=turn_id)
    assert same_error(await failure(lambda: sessions.GetTurn(their_turn, metadata=B)), before[0])
    # Usage is the caller's tenant's only.
    assert (await client.usage.GetUsage(us.GetUsageRequest(), metadata=B)).total.turns == 0
    assert (await client.usage.GetUsage(us.GetUsageRequest(), metadata=A)).total.turns == 1

    listed = await sessions.ListSessions(ses.ListSessionsRequest(), metadata=B)
    assert list(listed.sessions) == []

    # A still sees all of it, untouched.
    pending = await sessions.ListPendingApprovals(approvals, metadata=A)
    assert [a.call_id for a in pending.approvals] == [call_id]
    followed = await drain(
        runtime.ResumeStream(
            rt.ResumeStreamRequest(session_id="shared", turn_id=turn_id), metadata=A
        )
    )
    assert kinds(followed) == kinds(turn)


async def test_two_tenants_use_the_same_session_id_independently(client: Client) -> None:
    sessions = client.sessions
    created_a = await sessions.CreateSession(
        ses.CreateSessionRequest(session_id="same", title="A's"), metadata=A
    )
    # Neither ALREADY_EXISTS nor any other sign that A has "same".
    created_b = await sessions.CreateSession(
        ses.CreateSessionRequest(session_id="same", title="B's"), metadata=B
    )
    assert (created_a.session.title, created_b.session.title) == ("A's", "B's")

    await drain(client.runtime.StreamMessage(user_message("same", "from A"), metadata=A))
    await drain(client.runtime.StreamMessage(user_message("same", "from B, 1"), metadata=B))
    await drain(client.runtime.StreamMessage(user_message("same", "from B, 2"), metadata=B))

    async def user_texts(metadata: Metadata) -> list[str]:
        page = await sessions.ListMessages(
            ses.ListMessagesRequest(session_id="same"), metadata=metadata
        )
        return [m.content for m in page.messages if m.role == ses.ROLE_USER]

    assert await user_texts(A) == ["from A"]
    assert await user_texts(B) == ["from B, 1", "from B, 2"]

    await sessions.DeleteSession(ses.DeleteSessionRequest(session_id="same"), metadata=B)
    still = await sessions.GetSession(ses.GetSessionRequest(session_id="same"), metadata=A)
    assert (still.session.title, still.session.message_count) == ("A's", 2)
    gone = await failure(
        lambda: sessions.GetSession(ses.GetSessionRequest(session_id="same"), metadata=B)
    )
    assert gone.code == grpc.StatusCode.NOT_FOUND


async def events_until_turn_completed(watch: Any, turn_id: str) -> list[ev.Event]:
    """Events until that turn's completion: the last event a turn writes, so the server has
    nothing more to send and the watch is idle when the caller cancels it."""
    seen = []
    async for response in watch:
        seen.append(response.event)
        if (
            response.event.turn_id == turn_id
            and response.event.type == ev.EVENT_TYPE_TURN_COMPLETED
        ):
            break
    watch.cancel()
    return seen


async def test_watch_events_shows_only_the_callers_tenant(client: Client) -> None:
    await drain(client.runtime.StreamMessage(user_message("a-session", "hi"), metadata=A))
    b_turn = await drain(client.runtime.StreamMessage(user_message("b-session", "hi"), metadata=B))

    # A's events were committed first: a leak would show them before B's turn completes.
    replay = client.events.WatchEvents(ev.WatchEventsRequest(after_event_id=0), metadata=B)
    b_events = await events_until_turn_completed(replay, b_turn[0].turn_id)
    assert {e.session_id for e in b_events} == {"b-session"}

    # Live as well: B's watch from "now" sees B's next turn, and nothing of A's in between.
    live = client.events.WatchEvents(ev.WatchEventsRequest(), metadata=B)
    await live.initial_metadata()
    await drain(client.runtime.StreamMessage(user_message("a-session", "again"), metadata=A))
    again = await drain(
        client.runtime.StreamMessage(user_message("b-session", "again"), metadata=B)
    )
    followed = await events_until_turn_completed(live, again[0].turn_id)
    assert {e.session_id for e in followed} == {"b-session"}
    assert followed[0].type == ev.EVENT_TYPE_TURN_STARTED


# -- keys are never logged ---------------------------------------------------------------------


async def test_api_keys_never_reach_the_log(
    client: Client, runtime: bootstrap.RunningRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await drain(client.runtime.StreamMessage(user_message("s1", "hi"), metadata=A))
    await failure(
        lambda: client.sessions.ListSessions(ses.ListSessionsRequest(), metadata=bearer(WRONG_KEY))
    )
    await failure(
        lambda: client.sessions.GetSession(ses.GetSessionRequest(session_id="nope"), metadata=B)
    )
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records  # the log was captured at all
    for key in (KEY_A, KEY_B, KEY_C, WRONG_KEY):
        assert key not in text
