"""regenerate{} and edit_message{message_id, content} end to end, on each backend: what the
model no longer sees is kept, marked superseded, listed only on request, and never sent to
the model again; idempotency keys, SESSION_BUSY and ResumeStream work as for any turn."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.grpc_helpers import decision, read_rest, rich_error, user_message
from tests.support.runtime_fixtures import Client


def regenerate(session_id: str, *, client_message_id: str = "") -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id, client_message_id=client_message_id, regenerate=rt.Regenerate()
    )


def edit(session_id: str, message_id: str, content: str) -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id,
        edit_message=rt.EditMessage(message_id=message_id, content=content),
    )


async def messages(client: Client, session_id: str, *, everything: bool = False) -> list[Any]:
    listed = await client.sessions.ListMessages(
        ses.ListMessagesRequest(session_id=session_id, include_superseded=everything)
    )
    return list(listed.messages)


def sent_to_model(model: FakeModelServer, index: int = -1) -> list[tuple[str, str]]:
    """(role, content) of the conversation in a model request, its system prompt left out."""
    return [
        (m["role"], m.get("content") or "")
        for m in model.requests[index]["messages"]
        if m["role"] != "system"
    ]


async def test_regenerate_answers_the_last_user_message_again(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("first try"), text_answer("second try"))
    first = await client.turn(user_message("s1", "tell me a joke"))
    again = await client.turn(regenerate("s1"))

    asked = first[0].turn_started.input_message_id
    assert again[0].turn_started.input_message_id == asked  # the message answered again
    assert again[-2].assistant_message.content == "second try"
    assert sent_to_model(model_server) == [("user", "tell me a joke")]  # the old answer gone

    visible = await messages(client, "s1")
    assert [(m.content, m.superseded_by_turn_id) for m in visible] == [
        ("tell me a joke", ""),
        ("second try", ""),
    ]
    everything = await messages(client, "s1", everything=True)
    assert [(m.content, m.superseded_by_turn_id) for m in everything] == [
        ("tell me a joke", ""),
        ("first try", again[0].turn_id),
        ("second try", ""),
    ]
    # The next turn builds on the answer kept.
    model_server.enqueue(text_answer("another"))
    await client.turn(user_message("s1", "more"))
    assert sent_to_model(model_server) == [
        ("user", "tell me a joke"),
        ("assistant", "second try"),
        ("user", "more"),
    ]


async def test_an_edit_replaces_a_user_message_and_drops_what_came_after(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("a1"), text_answer("a2"), text_answer("about cats"))
    first = await client.turn(user_message("s1", "about dogs"))
    await client.turn(user_message("s1", "and wolves?"))
    edited = await client.turn(edit("s1", first[0].turn_started.input_message_id, "about cats"))

    assert sent_to_model(model_server) == [("user", "about cats")]
    visible = await messages(client, "s1")
    assert [(m.role, m.content) for m in visible] == [
        (ses.ROLE_USER, "about cats"),
        (ses.ROLE_ASSISTANT, "about cats"),
    ]
    assert visible[0].message_id == edited[0].turn_started.input_message_id
    everything = await messages(client, "s1", everything=True)
    assert [(m.position, m.content, bool(m.superseded_by_turn_id)) for m in everything] == [
        (1, "about dogs", True),
        (2, "a1", True),
        (3, "and wolves?", True),
        (4, "a2", True),
        (5, "about cats", False),
        (6, "about cats", False),
    ]
    assert {m.superseded_by_turn_id for m in everything[:4]} == {edited[0].turn_id}
    turn = await client.sessions.GetTurn(
        ses.GetTurnRequest(session_id="s1", turn_id=edited[0].turn_id)
    )
    assert turn.turn.input_message_id == visible[0].message_id


async def test_a_regenerate_and_an_edit_send_the_model_their_own_settings_and_tools(
    client: Client, model_server: FakeModelServer
) -> None:
    def with_controls(request: rt.StreamMessageRequest) -> rt.StreamMessageRequest:
        request.generation.temperature = 0.9
        request.tools.append(mc.ToolDefinition(name="ide_lint", description="Lint in the IDE"))
        return request

    model_server.enqueue(text_answer("a1"), text_answer("a2"), text_answer("a3"))
    first = await client.turn(user_message("s1", "lint a.py"))
    await client.turn(with_controls(regenerate("s1")))
    asked = first[0].turn_started.input_message_id
    await client.turn(with_controls(edit("s1", asked, "lint b.py")))

    regenerated, edited = model_server.requests[1:]
    for body in (regenerated, edited):
        assert body.get("temperature") == 0.9
        assert "ide_lint" in [tool["function"]["name"] for tool in body.get("tools", [])]


async def test_a_call_waiting_for_approval_in_the_dropped_part_is_closed_first(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "a.py", "content": "x"}),
        text_answer("no file then"),
    )
    asked = await client.turn(user_message("s1", "write a.py"))
    call = asked[-2].tool_call
    assert call.requires_approval
    await client.turn(regenerate("s1"))

    pending = await client.sessions.ListPendingApprovals(
        ses.ListPendingApprovalsRequest(session_id="s1")
    )
    assert not pending.approvals
    everything = await messages(client, "s1", everything=True)
    assert [(m.role, m.tool_call_id, bool(m.superseded_by_turn_id)) for m in everything] == [
        (ses.ROLE_USER, "", False),
        (ses.ROLE_ASSISTANT, "", True),  # the call
        (ses.ROLE_TOOL, call.call_id, True),  # its synthetic result, as for a new message
        (ses.ROLE_ASSISTANT, "", False),
    ]
    assert everything[2].content == "not executed: superseded by a new message"
    assert sent_to_model(model_server) == [("user", "write a.py")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.turn(decision("s1", call.call_id, rt.DECISION_APPROVE))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.error_info is not None and error.error_info.reason == "ALREADY_DECIDED"


async def test_regenerate_is_idempotent_resumable_and_waits_for_a_running_turn(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("one"))
    await client.turn(user_message("s1", "hello"))
    asked, release = asyncio.Event(), asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        asked.set()
        await release.wait()

    model_server.on_request = hold
    model_server.enqueue(text_answer("two"))
    request = regenerate("s1", client_message_id="regen-1")
    running = client.runtime.StreamMessage(request)
    started = await running.read()
    assert isinstance(started, rt.StreamChunk)
    await asyncio.wait_for(asked.wait(), 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.turn(regenerate("s1"))  # another regenerate meanwhile: busy
    busy = rich_error(caught.value)
    assert busy.code == grpc.StatusCode.ABORTED
    assert busy.error_info is not None and busy.error_info.reason == "SESSION_BUSY"
    assert busy.error_info.metadata["turn_id"] == started.turn_id

    release.set()
    rest = await read_rest(running)
    assert rest[-2].assistant_message.content == "two"
    # The same key again replays the turn; ResumeStream serves it too.
    replayed = await client.turn(request)
    resumed = client.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id)
    )
    finals = [c for c in [started, *rest] if not c.HasField("assistant_delta")]
    assert replayed == finals == [c async for c in resumed]
    assert len(model_server.requests) == 2


@pytest.mark.parametrize(
    ("make", "code", "reason"),
    [
        (lambda ids: regenerate("nope"), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
        (
            lambda ids: regenerate("empty"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOTHING_TO_REGENERATE",
        ),
        (lambda ids: edit("s1", "msg_nope", "x"), grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND"),
        (
            lambda ids: edit("s1", ids["answer"], "x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NOT_A_USER_MESSAGE",
        ),
        (
            lambda ids: edit("s1", ids["question"], "  "),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EMPTY_MESSAGE",
        ),
        (
            lambda ids: edit("s1", ids["edited"], "x"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "MESSAGE_SUPERSEDED",
        ),
        (
            lambda ids: rt.StreamMessageRequest(regenerate=rt.Regenerate()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
        ),
    ],
)
async def test_what_cannot_be_regenerated_or_edited_is_refused_and_changes_nothing(
    client: Client, model_server: FakeModelServer, make: Any, code: grpc.StatusCode, reason: str
) -> None:
    model_server.enqueue(text_answer("answer"), text_answer("edited answer"))
    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="empty"))
    first = await client.turn(user_message("s1", "question"))
    edited = await client.turn(edit("s1", first[0].turn_started.input_message_id, "question"))
    ids = {
        "edited": first[0].turn_started.input_message_id,
        "question": edited[0].turn_started.input_message_id,
        "answer": edited[-2].assistant_message.message_id,
    }
    before = await messages(client, "s1", everything=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.turn(make(ids))
    error = rich_error(caught.value)
    assert (error.code, error.error_info and error.error_info.reason) == (code, reason)
    assert await messages(client, "s1", everything=True) == before
