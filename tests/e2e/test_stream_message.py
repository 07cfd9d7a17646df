"""StreamMessage end to end: real gRPC port, real database, real HTTP model endpoint."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import query
from tests.support.fake_model_server import (
    FakeModelServer,
    ResponseWriter,
    ScriptedResponse,
    http_error,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import kinds, rich_error, tool_result, user_message
from tests.support.runtime_fixtures import Client
from tests.support.waiting import eventually


def sqlite_rows(db_path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """A synchronous read: the in-process server cannot run while it looks."""
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


async def collect(client: Client, request: rt.StreamMessageRequest) -> list[rt.StreamChunk]:
    return [chunk async for chunk in client.runtime.StreamMessage(request)]


async def test_a_streamed_turn_is_persisted_in_order(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("Hello from the model"))
    chunks = await collect(client, user_message("s1", "hi there"))

    deltas = [c for c in chunks if c.HasField("assistant_delta")]
    assert kinds(chunks) == ["turn_started"] + ["assistant_delta"] * len(deltas) + [
        "assistant_message",
        "turn_completed",
    ]
    assert deltas  # streamed: tokens that arrive together may share a delta
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert {(c.session_id, c.turn_id) for c in chunks} == {("s1", chunks[0].turn_id)}
    assert "".join(c.assistant_delta.text for c in deltas) == "Hello from the model"
    assert chunks[-2].assistant_message.content == "Hello from the model"
    completed = chunks[-1].turn_completed
    assert completed.stop_reason == rt.STOP_REASON_END_TURN
    assert (
        completed.usage.prompt_tokens,
        completed.usage.completion_tokens,
        completed.usage.total_tokens,
    ) == (5, 7, 12)

    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [(m.role, m.content) for m in page.messages] == [
        (ses.ROLE_USER, "hi there"),
        (ses.ROLE_ASSISTANT, "Hello from the model"),
    ]
    assert page.messages[0].message_id == chunks[0].turn_started.input_message_id
    assert page.messages[1].message_id == chunks[-2].assistant_message.message_id
    assert page.next_page_token == ""

    sent = model_server.requests[0]
    assert sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][-1] == {"role": "user", "content": "hi there"}
    assert model_server.headers[0]["authorization"] == "Bearer sk-test"


async def test_commit_1_happens_before_the_model_is_asked(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    seen: list[list[tuple[Any, ...]]] = []

    async def check_committed(_body: dict[str, Any]) -> None:
        # Our own connection sees only what the runtime committed.
        seen.append(
            list(
                await query(
                    database_url, "SELECT role, content FROM messages WHERE session_id = 's1'"
                )
            )
        )
        seen.append(list(await query(database_url, "SELECT status FROM turns")))

    model_server.on_request = check_committed
    model_server.enqueue(text_answer("ok"))
    await collect(client, user_message("s1", "durable before the model"))
    assert seen == [[("user", "durable before the model")], [("running",)]]


async def test_model_failure_after_commit_1_keeps_the_input_and_reports_an_error(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    # Retried before the first token (3 attempts by default), then reported.
    model_server.enqueue(*[http_error(503, "upstream overloaded")] * 3)
    chunks = await collect(client, user_message("s1", "please answer"))

    assert kinds(chunks) == ["turn_started", "error", "turn_completed"]
    error = chunks[1].error
    assert (error.code, error.reason, error.retryable) == ("UNAVAILABLE", "MODEL_HTTP_503", True)
    assert "sk-test" not in error.message
    assert len(model_server.requests) == 3
    assert chunks[2].turn_completed.stop_reason == rt.STOP_REASON_ERROR
    assert await query(database_url, "SELECT status, stop_reason, error_reason FROM turns") == [
        ("failed", "error", "MODEL_HTTP_503")
    ]
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [m.content for m in page.messages] == ["please answer"]

    # The session is free again and history is still valid for the next turn.
    model_server.enqueue(text_answer("recovered"))
    retry = await collect(client, user_message("s1", "again"))
    assert retry[-2].assistant_message.content == "recovered"
    assert [m["content"] for m in model_server.requests[-1]["messages"][1:]] == [
        "please answer",
        "again",
    ]


# SQLite only (this param replaces database_url's own, one per backend): the check reads the
# database synchronously at the chunk's arrival, and there is no sync PostgreSQL driver here.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_tool_call_message_is_committed_before_the_chunk_arrives(
    client: Client, model_server: FakeModelServer, db_path: Path
) -> None:
    # The model finishes its answer only once the client has seen the first delta: else the
    # answer could be committed before the client reads the delta it was sent before.
    first_delta_seen = asyncio.Event()
    model_server.enqueue(
        tool_call_answer(
            "write_file",
            {"path": "src/app.py", "content": "x=1\n"},
            call_id="call_w1",
            extra_calls=[("read_file", {"path": "b"})],
            gate=first_delta_seen,
        )
    )
    seen_at_arrival: list[tuple[Any, ...]] = []
    seen_at_first_delta: list[tuple[Any, ...]] | None = None
    received: list[rt.StreamChunk] = []
    async for chunk in client.runtime.StreamMessage(user_message("s1", "write the file")):
        # Synchronous on purpose: the in-process server cannot run while we look.
        if chunk.HasField("tool_call_delta") and seen_at_first_delta is None:
            seen_at_first_delta = sqlite_rows(
                db_path, "SELECT role FROM messages WHERE role = ?", "assistant"
            )
            first_delta_seen.set()
        if chunk.HasField("tool_call"):
            seen_at_arrival = sqlite_rows(
                db_path,
                "SELECT role, tool_calls FROM messages WHERE message_id = ?",
                chunk.tool_call.message_id,
            )
        received.append(chunk)

    # The arguments streamed while the model wrote them, before anything was stored...
    deltas = [c.tool_call_delta for c in received if c.HasField("tool_call_delta")]
    assert {(d.call_id, d.tool_name) for d in deltas} == {("call_w1", "write_file")}
    assert json.loads("".join(d.arguments_fragment for d in deltas)) == {
        "path": "src/app.py",
        "content": "x=1\n",
    }
    assert seen_at_first_delta == []
    # ...and the call itself only once it was committed.
    chunks = [c for c in received if not c.HasField("tool_call_delta")]
    assert kinds(chunks) == ["turn_started", "tool_call", "turn_completed"]
    assert kinds(received)[-2:] == ["tool_call", "turn_completed"]
    call = chunks[1].tool_call
    assert (call.call_id, call.tool_name, call.requires_approval) == ("call_w1", "write_file", True)
    assert "write_file" in call.approval_reason
    assert json_format.MessageToDict(call.arguments) == {"path": "src/app.py", "content": "x=1\n"}
    assert len(seen_at_arrival) == 1 and seen_at_arrival[0][0] == "assistant"
    assert "call_w1" in seen_at_arrival[0][1] and "read_file" not in seen_at_arrival[0][1]
    assert chunks[2].turn_completed.stop_reason == rt.STOP_REASON_AWAITING_APPROVAL

    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert page.messages[1].tool_calls[0].tool_name == "write_file"


async def test_a_calls_deltas_and_the_call_share_one_new_id_when_the_server_reuses_ids(
    client: Client, model_server: FakeModelServer
) -> None:
    # As vLLM and llama.cpp number calls: from call_0 in every response.
    model_server.enqueue(
        tool_call_answer("read_file", {"path": 7}, call_id="call_0"),  # refused: not a string
        tool_call_answer("read_file", {"path": "a.py"}, call_id="call_0"),
        tool_call_answer("read_file", {"path": "b.py"}, call_id="call_0"),  # the next turn's
    )
    first = await collect(client, user_message("s1", "read a.py"))
    (answered,) = [c.tool_call.call_id for c in first if c.HasField("tool_call")]
    second = await collect(client, tool_result("s1", answered, "A"))

    ids: list[str] = []
    for received in (first, second):
        (call,) = [c.tool_call for c in received if c.HasField("tool_call")]
        fragments: dict[str, str] = {}
        for delta in (c.tool_call_delta for c in received if c.HasField("tool_call_delta")):
            fragments[delta.call_id] = fragments.get(delta.call_id, "") + delta.arguments_fragment
        assert json.loads(fragments.pop(call.call_id)) == json_format.MessageToDict(call.arguments)
        ids += [call.call_id, *fragments]
    assert ids[:2] == [answered, "call_0"]  # the refused call kept the model's id
    assert len(set(ids)) == 3


async def test_read_only_tool_needs_no_approval(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(tool_call_answer("read_file", {"path": "README.md"}))
    received = await collect(client, user_message("s1", "read the readme"))
    chunks = [c for c in received if not c.HasField("tool_call_delta")]
    assert chunks[1].tool_call.requires_approval is False
    assert chunks[2].turn_completed.stop_reason == rt.STOP_REASON_TOOL_CALL


async def test_busy_session_is_aborted_with_the_running_turn_id(
    client: Client, model_server: FakeModelServer
) -> None:
    model_asked = asyncio.Event()
    release = asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        model_asked.set()
        await release.wait()

    model_server.on_request = hold
    model_server.enqueue(text_answer("slow answer"))
    first = client.runtime.StreamMessage(user_message("s1", "first"))
    started = await first.read()
    await model_asked.wait()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, user_message("s1", "second"))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.ABORTED
    assert error.error_info is not None
    assert error.error_info.reason == "SESSION_BUSY"
    assert error.error_info.metadata["turn_id"] == started.turn_id
    assert error.retry_info is not None

    release.set()
    rest = []
    while (chunk := await first.read()) is not grpc.aio.EOF:
        rest.append(chunk)
    assert rest[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN


async def test_client_cancel_closes_the_model_request_and_frees_the_session(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    upstream_closed = asyncio.Event()

    async def stream_then_wait(_request: Any, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(
            {"choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}]}
        )
        await out.wait_for_disconnect()  # only the runtime closing the request ends this
        upstream_closed.set()

    model_server.enqueue(ScriptedResponse(stream_then_wait, "hang after one token"))
    call = client.runtime.StreamMessage(user_message("s1", "never finished"))
    started = await call.read()
    delta = await call.read()
    assert isinstance(delta, rt.StreamChunk) and delta.assistant_delta.text == "partial "
    call.cancel()
    await asyncio.wait_for(upstream_closed.wait(), 10)

    async def session_is_free() -> bool:
        got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
        return not got.session.running_turn_id

    await eventually(session_is_free, what="the cancelled turn to free the session")
    assert await query(
        database_url, "SELECT status, stop_reason FROM turns WHERE turn_id = :t", t=started.turn_id
    ) == [("cancelled", "cancelled")]
    assert await query(
        database_url, "SELECT role, content, incomplete FROM messages ORDER BY position"
    ) == [
        ("user", "never finished", 0),
        ("assistant", "partial ", 1),
    ]

    model_server.enqueue(text_answer("next"))
    chunks = await collect(client, user_message("s1", "next one"))
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN


@pytest.mark.parametrize(
    ("request_", "code", "reason", "field"),
    [
        (
            rt.StreamMessageRequest(session_id="s1"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MISSING_INPUT",
            "input",
        ),
        (
            user_message("s1", "   "),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EMPTY_MESSAGE",
            "user_message.content",
        ),
        (
            user_message("not a valid id!", "hi"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SESSION_ID",
            "session_id",
        ),
        (
            user_message("s1", "hi", agent="wizard"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_AGENT",
            "agent",
        ),
        (
            rt.StreamMessageRequest(session_id="s1", tool_result=rt.ToolResult(call_id="c")),
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
            None,
        ),
        (
            rt.StreamMessageRequest(
                session_id="s1", approval_decision=rt.ApprovalDecision(call_id="c")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_INPUT",
            "approval_decision.decision",
        ),
    ],
)
async def test_bad_requests_get_precise_statuses(
    client: Client,
    model_server: FakeModelServer,
    request_: rt.StreamMessageRequest,
    code: grpc.StatusCode,
    reason: str,
    field: str | None,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, request_)
    error = rich_error(caught.value)
    assert error.code == code
    assert error.error_info is not None and error.error_info.reason == reason
    assert error.error_info.domain == "agent-runtime"
    if field:
        assert [f for f, _ in error.field_violations] == [field]
    assert model_server.requests == []


async def test_oversized_message_is_invalid_argument(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, user_message("s1", "x" * (256 * 1024 + 1)))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.error_info is not None and error.error_info.reason == "MESSAGE_TOO_LARGE"


async def test_empty_session_id_creates_a_session(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("welcome"))
    chunks = await collect(client, user_message("", "hello"))
    session_id = chunks[0].session_id
    assert session_id.startswith("ses_")
    got = await client.sessions.GetSession(ses.GetSessionRequest(session_id=session_id))
    assert got.session.message_count == 2
    assert got.session.running_turn_id == ""
