"""Text the stores cannot hold as it is, through the real server on SQLite and PostgreSQL.

PostgreSQL's text refuses U+0000 and its VARCHAR columns refuse longer values; SQLite takes
both. Whatever a client or the model sends, the behaviour is the same on both stores:
- a short field that cannot be stored (an id, a key, the model name, a title) is refused
  before anything is stored: INVALID_ARGUMENT with a BadRequest field violation;
- free text (messages, tool results, feedback, reasons, the model's answer, error texts) is
  stored with U+0000 as U+FFFD, what the client was streamed says the same, and the session
  reads back; values kept as JSON (tool arguments) keep U+0000 (domain/text.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.checks import all_messages, message_problems
from tests.support.databases import query
from tests.support.fake_model_server import (
    FakeModelServer,
    http_error,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import (
    decision,
    kinds,
    only,
    rich_error,
    switch_agent,
    tool_result,
    user_message,
)
from tests.support.runtime_fixtures import Client

NUL = "\x00"
FFFD = "\ufffd"


def _token(kind: str, *values: Any) -> str:
    """A page token shaped like the server's own, with values it never issued."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _stream(client: Client, request: rt.StreamMessageRequest) -> list[rt.StreamChunk]:
    return [chunk async for chunk in client.runtime.StreamMessage(request)]


async def _resumed(client: Client, session_id: str, turn_id: str) -> list[rt.StreamChunk]:
    request = rt.ResumeStreamRequest(session_id=session_id, turn_id=turn_id)
    return [chunk async for chunk in client.runtime.ResumeStream(request)]


_DELTAS = ("assistant_delta", "tool_call_delta", "reasoning_delta")


def _finals(chunks: list[rt.StreamChunk]) -> list[rt.StreamChunk]:
    """What a replay holds: every chunk but the deltas."""
    return [c for c in chunks if c.WhichOneof("chunk") not in _DELTAS]


async def _stored_rows(database_url: str) -> list[tuple[Any, ...]]:
    counts: list[tuple[Any, ...]] = []
    for table in ("sessions", "turns", "messages", "approvals", "events"):
        counts += await query(database_url, f"SELECT count(*) FROM {table}")
    return counts


# -- short fields: refused, nothing stored ------------------------------------------------------

Call = Callable[[Client], Any]


def _turn(request: rt.StreamMessageRequest) -> Call:
    return lambda client: _stream(client, request)


def _with(**fields: Any) -> rt.StreamMessageRequest:
    request = user_message("s1", "hello")
    for name, value in fields.items():
        setattr(request, name, value)
    return request


REFUSED: dict[str, tuple[Call, str]] = {
    "client_message_id with NUL": (
        _turn(_with(client_message_id=f"key{NUL}1")),
        "client_message_id",
    ),
    "client_message_id too long": (_turn(_with(client_message_id="k" * 129)), "client_message_id"),
    "client_message_id with a newline": (
        _turn(_with(client_message_id="k\n1")),
        "client_message_id",
    ),
    "model with NUL": (_turn(_with(model=f"gpt{NUL}")), "model"),
    "model too long": (_turn(_with(model="m" * 257)), "model"),
    "tool_result.call_id with NUL": (
        _turn(tool_result("s1", f"call{NUL}", "done")),
        "tool_result.call_id",
    ),
    "approval_decision.call_id with NUL": (
        _turn(decision("s1", f"call{NUL}", rt.DECISION_APPROVE)),
        "approval_decision.call_id",
    ),
    "switch_agent.agent with NUL": (_turn(switch_agent("s1", f"coder{NUL}")), "switch_agent.agent"),
    # As long as a model's is cut to: the most recent switches are part of every GetSession.
    "switch_agent.reason too long": (
        _turn(switch_agent("s1", "architect", "r" * 1025)),
        "switch_agent.reason",
    ),
    "agent with NUL": (_turn(_with(agent=f"coder{NUL}")), "agent"),
    "title with NUL": (
        lambda client: client.sessions.CreateSession(
            ses.CreateSessionRequest(session_id="s2", title=f"my{NUL}title")
        ),
        "title",
    ),
    "title too long": (
        lambda client: client.sessions.CreateSession(
            ses.CreateSessionRequest(session_id="s2", title="t" * 1025)
        ),
        "title",
    ),
    "ResumeStream turn_id with NUL": (
        lambda client: _resumed(client, "s1", f"turn{NUL}"),
        "turn_id",
    ),
    "CancelTurn turn_id with NUL": (
        lambda client: client.runtime.CancelTurn(
            rt.CancelTurnRequest(session_id="s1", turn_id=f"turn{NUL}")
        ),
        "turn_id",
    ),
    "a message cursor past the schema's integers": (
        lambda client: client.sessions.ListMessages(
            ses.ListMessagesRequest(session_id="s1", page_token=_token("pos", 2**31))
        ),
        "page_token",
    ),
    "a session cursor with NUL": (
        lambda client: client.sessions.ListSessions(
            ses.ListSessionsRequest(page_token=_token("ses", "2026-01-01T00:00:00+00:00", NUL))
        ),
        "page_token",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_short_field_that_cannot_be_stored_is_invalid_argument_and_stores_nothing(
    client: Client, model_server: FakeModelServer, database_url: str, case: str
) -> None:
    model_server.default_response = text_answer("ok")
    await _stream(client, user_message("s1", "first"))
    before = await _stored_rows(database_url)
    call, field = REFUSED[case]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(client)

    error = rich_error(refused.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert [name for name, _ in error.field_violations] == [field], error
    assert await _stored_rows(database_url) == before
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [m.content for m in page.messages] == ["first", "ok"]


async def test_the_limits_themselves_are_accepted(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.default_response = text_answer("ok")
    request = user_message("s1", "hi", model="m" * 256, client_message_id="k" * 128)
    chunks = await _stream(client, request)
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert model_server.requests[-1]["model"] == "m" * 256
    created = await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="s2", title="t" * 1024)
    )
    assert created.session.title == "t" * 1024
    switched = await _stream(client, switch_agent("s1", "architect", "\U0001f600" * 1024))
    assert only(switched, "agent_switched").agent_switched.reason == "\U0001f600" * 1024


# -- free text from the client: stored with U+FFFD, the session readable ------------------------


async def test_nul_in_every_free_text_input_is_stored_as_ufffd(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    # A user message with NUL; the model asks to read a file.
    model_server.enqueue(tool_call_answer("read_file", {"path": "bin.dat"}, call_id="call_r"))
    first = await _stream(client, user_message("s1", f"read{NUL}this", client_message_id="k1"))
    assert only(first, "tool_call").tool_call.call_id == "call_r"
    assert model_server.requests[-1]["messages"][-1] == {
        "role": "user",
        "content": f"read{FFFD}this",
    }

    # A tool result with NUL (a binary file); the model asks to write, edited with NUL kept.
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "a.md", "content": "x"}, call_id="call_w")
    )
    await _stream(client, tool_result("s1", "call_r", f"\x7fELF{NUL}{NUL}data"))
    assert model_server.requests[-1]["messages"][-1]["content"] == f"\x7fELF{FFFD}{FFFD}data"
    edited = {"path": "a.md", "content": f"x{NUL}y"}
    approved = await _stream(client, decision("s1", "call_w", rt.DECISION_EDIT, edited=edited))
    assert dict(only(approved, "tool_call").tool_call.arguments) == edited  # JSON keeps it

    # The client ran it; the model asks again, and the human rejects with NUL in the feedback.
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "b.md", "content": "y"}, call_id="call_w2"),
        text_answer("understood"),
    )
    await _stream(client, tool_result("s1", "call_w", "written"))
    rejected = await _stream(
        client, decision("s1", "call_w2", rt.DECISION_REJECT, feedback=f"no{NUL}pe")
    )
    assert only(rejected, "assistant_message").assistant_message.content == "understood"

    # An agent switch whose reason has NUL.
    switched = await _stream(client, switch_agent("s1", "architect", f"plan{NUL}first"))
    assert only(switched, "agent_switched").agent_switched.reason == f"plan{FFFD}first"

    messages = await all_messages(client.sessions, "s1")
    assert message_problems(messages) == []
    contents = [m.content for m in messages]
    assert contents[0] == f"read{FFFD}this"
    assert f"\x7fELF{FFFD}{FFFD}data" in contents
    assert any(f"no{FFFD}pe" in c for c in contents), contents
    assert not any(NUL in c for c in contents)
    edited_call = next(m for m in messages if m.tool_calls and m.tool_calls[0].call_id == "call_w")
    assert dict(edited_call.tool_calls[0].arguments) == edited
    got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
    assert [s.reason for s in got.session.agent_history] == [f"plan{FFFD}first"]
    assert await query(
        database_url, "SELECT feedback FROM approvals WHERE call_id = 'call_w2'"
    ) == [(f"no{FFFD}pe",)]
    # Every turn replays as it streamed, and a retry (same key, same input) finds its turn.
    for chunks in (first, approved, rejected, switched):
        assert _finals(await _resumed(client, "s1", chunks[0].turn_id)) == _finals(chunks)
    retried = await _stream(client, user_message("s1", f"read{NUL}this", client_message_id="k1"))
    assert _finals(retried) == _finals(first)


# -- free text from the model -------------------------------------------------------------------


async def test_a_model_answer_with_nul_is_stored_not_lost(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    model_server.enqueue(text_answer(f"hello{NUL}world, {NUL}again"))
    chunks = await _stream(client, user_message("s1", "hi"))

    answer = f"hello{FFFD}world, {FFFD}again"
    assert kinds(_finals(chunks)) == ["turn_started", "assistant_message", "turn_completed"]
    streamed = "".join(c.assistant_delta.text for c in chunks if c.HasField("assistant_delta"))
    assert streamed == answer
    assert only(chunks, "assistant_message").assistant_message.content == answer
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [m.content for m in page.messages] == ["hi", answer]
    assert _finals(await _resumed(client, "s1", chunks[0].turn_id)) == _finals(chunks)


async def test_tool_calls_whose_id_name_or_arguments_hold_nul_are_stored(
    client: Client, model_server: FakeModelServer
) -> None:
    # A call id with NUL, and one over 128 characters: no client could send them back, so the
    # call gets an id of the runtime's. Arguments keep NUL (stored as JSON).
    for model_call_id in (f"call{NUL}1", "c" * 300):
        model_server.enqueue(
            tool_call_answer("read_file", {"path": f"a{NUL}.py"}, call_id=model_call_id),
            text_answer("thanks"),
        )
        asked = await _stream(client, user_message("s1", "read a.py"))
        call = only(asked, "tool_call").tool_call
        assert call.call_id != model_call_id and len(call.call_id) <= 128
        assert dict(call.arguments) == {"path": f"a{NUL}.py"}
        answered = await _stream(client, tool_result("s1", call.call_id, "print(1)"))
        assert answered[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        assert model_server.requests[-1]["messages"][-2]["tool_calls"][0]["id"] == call.call_id

    # A tool name with NUL: refused, and the model reads why (as text: U+FFFD) and answers.
    # Its call stays in the history as it made it (JSON).
    model_server.enqueue(
        tool_call_answer(f"read{NUL}file", {"path": "a.py"}, call_id="call_2"),
        text_answer("done"),
    )
    refused = await _stream(client, user_message("s1", "again"))
    assert only(refused, "assistant_message").assistant_message.content == "done"
    call_message, tool_error = model_server.requests[-1]["messages"][-2:]
    assert call_message["tool_calls"][0]["function"]["name"] == f"read{NUL}file"
    assert tool_error["role"] == "tool" and f"read{FFFD}file" in tool_error["content"]

    messages = await all_messages(client.sessions, "s1")
    assert message_problems(messages) == []
    assert not any(NUL in m.content for m in messages)
    assert _finals(await _resumed(client, "s1", refused[0].turn_id)) == _finals(refused)


async def test_an_error_text_with_nul_from_the_model_endpoint_is_recorded(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    body = json.dumps({"error": {"message": f"bad{NUL}request", "type": "invalid_request"}})
    model_server.enqueue(http_error(400, body))
    chunks = await _stream(client, user_message("s1", "hi"))

    error = only(chunks, "error").error
    assert error.code == "FAILED_PRECONDITION"
    assert f"bad{FFFD}request" in error.message
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_ERROR
    [(stored,)] = await query(
        database_url, "SELECT error_message FROM turns WHERE turn_id = :t", t=chunks[0].turn_id
    )
    assert f"bad{FFFD}request" in stored
    assert _finals(await _resumed(client, "s1", chunks[0].turn_id)) == _finals(chunks)
