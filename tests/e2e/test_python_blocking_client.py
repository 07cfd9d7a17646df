"""BlockingAgentRuntimeClient against a real server, directly and through a real TCP proxy.

The client blocks its thread, as in a script or a WSGI worker; the tests run its calls in a
worker thread (asyncio.to_thread) so that the server, the model endpoint and the proxy, which
share the test's event loop, keep running meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.client import (
    AgentRuntimeClient,
    AgentRuntimeError,
    BlockingAgentRuntimeClient,
    RetryPolicy,
    approve,
    arguments_of,
    regenerate,
    tool_result,
)
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.broken_stream import (
    assert_resumed_without_duplicates,
    break_after_the_turn_ends,
    gate_the_answer,
)
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.grpc_helpers import kinds
from tests.support.tcp_proxy import TcpProxy

QUICK_RETRIES = RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.5)


@pytest.fixture
def blocking(runtime: bootstrap.RunningRuntime) -> Iterator[BlockingAgentRuntimeClient]:
    with BlockingAgentRuntimeClient(f"127.0.0.1:{runtime.port}", retry=QUICK_RETRIES) as client:
        yield client


async def test_a_tool_call_is_approved_run_and_answered_through_the_blocking_client(
    blocking: BlockingAgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "a.txt", "content": "x"}), text_answer("written")
    )
    asked = await asyncio.to_thread(lambda: list(blocking.stream_message("s1", "write it")))
    assert kinds(asked)[0] == "turn_started"
    assert asked[-1].turn_completed.stop_reason == rt.STOP_REASON_AWAITING_APPROVAL
    call = asked[-2].tool_call
    pending = await asyncio.to_thread(lambda: list(blocking.list_pending_approvals("s1")))
    assert [(p.call_id, arguments_of(p)) for p in pending] == [
        (call.call_id, {"path": "a.txt", "content": "x"})
    ]

    approved = await asyncio.to_thread(
        lambda: list(blocking.stream_message("s1", approve(call.call_id)))
    )
    assert approved[-1].turn_completed.stop_reason == rt.STOP_REASON_TOOL_CALL
    answered = await asyncio.to_thread(
        lambda: list(blocking.stream_message("s1", tool_result(call.call_id, "wrote 1 byte")))
    )
    assert answered[-2].assistant_message.content == "written"

    messages = await asyncio.to_thread(lambda: list(blocking.list_messages("s1")))
    assert [m.role for m in messages] == [
        ses.ROLE_USER,
        ses.ROLE_ASSISTANT,
        ses.ROLE_TOOL,
        ses.ROLE_ASSISTANT,
    ]
    session = await asyncio.to_thread(blocking.get_session, "s1")
    assert (session.message_count, session.running_turn_id) == (4, "")


async def test_one_client_serves_turns_from_many_threads_at_once(
    blocking: BlockingAgentRuntimeClient, model_server: FakeModelServer
) -> None:
    sessions = [f"web-{n}" for n in range(4)]
    model_server.enqueue(*(text_answer(f"answer {n}") for n in range(len(sessions))))

    def turn(session_id: str) -> list[rt.StreamChunk]:
        return list(blocking.stream_message(session_id, "hi"))

    turns = await asyncio.gather(*(asyncio.to_thread(turn, s) for s in sessions))
    assert [t[0].session_id for t in turns] == sessions
    assert all(t[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN for t in turns)
    answers = {t[-2].assistant_message.content for t in turns}
    assert answers == {f"answer {n}" for n in range(len(sessions))}  # each model answer once


async def test_a_failure_raises_the_typed_error_with_the_server_s_request_id(
    blocking: BlockingAgentRuntimeClient,
) -> None:
    with pytest.raises(AgentRuntimeError) as raised:
        await asyncio.to_thread(blocking.get_session, "no-such-session")
    error = raised.value
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
        "agent-runtime",
    )
    assert error.request_id  # the id the server logged the call under


async def test_a_stream_broken_mid_turn_resumes_after_the_last_seq_without_duplicates(
    runtime: bootstrap.RunningRuntime, model_server: FakeModelServer
) -> None:
    gate = gate_the_answer(model_server)
    async with (
        TcpProxy("127.0.0.1", runtime.port) as proxy,
        AgentRuntimeClient(f"127.0.0.1:{runtime.port}") as direct,
    ):
        with BlockingAgentRuntimeClient(proxy.address, retry=QUICK_RETRIES) as proxied:
            stream = proxied.stream_message("s1", "count")
            received = [await asyncio.to_thread(next, stream) for _ in range(2)]
            assert kinds(received) == ["turn_started", "assistant_delta"]
            await break_after_the_turn_ends(proxy, gate, direct, "s1")
            received += await asyncio.to_thread(list, stream)
    assert_resumed_without_duplicates(received, proxy, model_server)


async def test_a_page_of_messages_shows_what_a_regenerate_superseded_on_request(
    blocking: BlockingAgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("first try"), text_answer("second try"))
    await asyncio.to_thread(lambda: list(blocking.stream_message("s1", "tell me")))
    await asyncio.to_thread(lambda: list(blocking.stream_message("s1", regenerate())))

    visible = await asyncio.to_thread(blocking.list_messages_page, "s1")
    everything = await asyncio.to_thread(
        lambda: blocking.list_messages_page("s1", include_superseded=True)
    )
    assert [m.content for m in visible.messages] == ["tell me", "second try"]
    assert [(m.content, bool(m.superseded_by_turn_id)) for m in everything.messages] == [
        ("tell me", False),
        ("first try", True),
        ("second try", False),
    ]
