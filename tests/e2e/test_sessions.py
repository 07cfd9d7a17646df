"""SessionService end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import (
    RichError,
    rich_error,
    switch_agent,
    tool_result,
    user_message,
)
from tests.support.runtime_fixtures import Client


async def test_create_get_and_duplicate(client: Client) -> None:
    created = await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="proj-1", title="Refactor")
    )
    assert (created.session.session_id, created.session.title, created.session.agent) == (
        "proj-1",
        "Refactor",
        "coder",
    )
    got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="proj-1"))
    assert got.session == created.session

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="proj-1"))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.error_info is not None and error.error_info.reason == "SESSION_EXISTS"

    generated = await client.sessions.CreateSession(ses.CreateSessionRequest())
    assert generated.session.session_id.startswith("ses_")


@pytest.mark.parametrize("call", ["GetSession", "ListMessages"])
async def test_unknown_session_is_not_found(client: Client, call: str) -> None:
    request = (
        ses.GetSessionRequest(session_id="nope")
        if call == "GetSession"
        else ses.ListMessagesRequest(session_id="nope")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(client.sessions, call)(request)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.error_info is not None and error.error_info.reason == "SESSION_NOT_FOUND"


async def test_bad_page_token_and_session_id_are_invalid_argument(client: Client) -> None:
    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="s1"))
    for request, field in (
        (ses.ListMessagesRequest(session_id="s1", page_token="garbage"), "page_token"),
        (ses.ListMessagesRequest(session_id="a b"), "session_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.sessions.ListMessages(request)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in error.field_violations] == [field]


async def test_pages_return_every_message_once_in_order(
    client: Client, model_server: FakeModelServer
) -> None:
    for i in range(5):
        model_server.enqueue(text_answer(f"answer {i}"))
        async for _ in client.runtime.StreamMessage(user_message("s1", f"question {i}")):
            pass

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await client.sessions.ListMessages(
            ses.ListMessagesRequest(session_id="s1", page_size=3, page_token=token)
        )
        seen += [m.content for m in page.messages]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4
    assert seen == [text for i in range(5) for text in (f"question {i}", f"answer {i}")]
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    positions = [m.position for m in page.messages]
    assert positions == list(range(1, 11))


async def test_paging_while_turns_are_appended_sees_every_message_once(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.default_response = text_answer("reply")
    for i in range(4):
        await client.turn(user_message("s1", f"m{i}"))

    seen: list[str] = []
    token = ""
    appended = 0
    while True:
        page = await client.sessions.ListMessages(
            ses.ListMessagesRequest(session_id="s1", page_size=3, page_token=token)
        )
        seen += [m.message_id for m in page.messages]
        if appended < 3:  # a new turn lands between every two pages
            await client.turn(user_message("s1", f"late {appended}"))
            appended += 1
        token = page.next_page_token
        if not token:
            break
    everything = await client.sessions.ListMessages(
        ses.ListMessagesRequest(session_id="s1", page_size=1000)
    )
    assert len(seen) == len(set(seen))
    assert seen == [m.message_id for m in everything.messages][: len(seen)]
    assert len(seen) >= 8


async def test_list_sessions_by_recent_activity_and_delete(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.default_response = text_answer("reply")
    for name in ("a", "b", "c"):
        await client.sessions.CreateSession(ses.CreateSessionRequest(session_id=name))
    await client.turn(user_message("a", "bump a"))

    first = await client.sessions.ListSessions(ses.ListSessionsRequest(page_size=2))
    rest = await client.sessions.ListSessions(
        ses.ListSessionsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [s.session_id for s in first.sessions] == ["a", "c"]
    assert [s.session_id for s in rest.sessions] == ["b"]
    assert rest.next_page_token == ""
    assert first.sessions[0].message_count == 2

    await client.sessions.DeleteSession(ses.DeleteSessionRequest(session_id="a"))
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    assert [s.session_id for s in listed.sessions] == ["c", "b"]


async def test_a_deleted_session_is_not_found_everywhere_and_its_id_is_never_reused(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("reply"))
    first = user_message("gone", "hello", client_message_id="m1")
    turn_id = (await client.turn(first))[0].turn_id
    await client.sessions.DeleteSession(ses.DeleteSessionRequest(session_id="gone"))

    def events() -> Any:
        request = ev.WatchEventsRequest(session_id="gone", after_event_id=0)
        return _drain(client.events.WatchEvents(request))

    for call in (
        client.sessions.GetSession(ses.GetSessionRequest(session_id="gone")),
        client.sessions.ListMessages(ses.ListMessagesRequest(session_id="gone")),
        client.sessions.ListPendingApprovals(ses.ListPendingApprovalsRequest(session_id="gone")),
        client.sessions.DeleteSession(ses.DeleteSessionRequest(session_id="gone")),
        client.turn(user_message("gone", "hello again")),
        client.turn(first),  # a retry of the turn it ran
        client.turn(tool_result("gone", "call_1", "out")),
        client.turn(switch_agent("gone", "architect")),
        _drain(
            client.runtime.ResumeStream(rt.ResumeStreamRequest(session_id="gone", turn_id=turn_id))
        ),
        client.runtime.CancelTurn(rt.CancelTurnRequest(session_id="gone", turn_id=turn_id)),
        events(),
    ):
        error = await _failure(call)
        assert error.code == grpc.StatusCode.NOT_FOUND, error
        assert error.error_info is not None and error.error_info.reason == "SESSION_DELETED"
        assert error.error_info.metadata["session_id"] == "gone"
        assert error.error_info.metadata["deleted_at"]

    error = await _failure(
        client.sessions.CreateSession(ses.CreateSessionRequest(session_id="gone"))
    )
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.error_info is not None and error.error_info.reason == "SESSION_ID_RETIRED"
    assert "deleted" in error.message
    assert model_server.requests and len(model_server.requests) == 1  # only the first turn
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    assert list(listed.sessions) == []


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def _failure(call: Awaitable[object]) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)
