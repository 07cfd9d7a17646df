"""agent_runtime.client against a real server, directly and through a real TCP proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.client import (
    NO_RETRIES,
    AgentRuntimeClient,
    AgentRuntimeError,
    RetryPolicy,
    approve,
    arguments_of,
    declared_tool,
    edit,
    regenerate,
    reject,
    switch_agent,
    tool_result,
)
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1.model_controls_pb2 import GenerationConfig
from tests.support.broken_stream import (
    assert_resumed_without_duplicates,
    break_after_the_turn_ends,
    gate_the_answer,
)
from tests.support.fake_model_server import (
    FakeModelServer,
    stall_after,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import kinds
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

QUICK_RETRIES = RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.5)


@pytest.fixture
async def api(runtime: bootstrap.RunningRuntime) -> AsyncIterator[AgentRuntimeClient]:
    async with AgentRuntimeClient(f"127.0.0.1:{runtime.port}", retry=QUICK_RETRIES) as client:
        yield client


@pytest.fixture
async def proxy(runtime: bootstrap.RunningRuntime) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", runtime.port) as proxy:
        yield proxy


@pytest.fixture
async def proxied(proxy: TcpProxy) -> AsyncIterator[AgentRuntimeClient]:
    async with AgentRuntimeClient(proxy.address, retry=QUICK_RETRIES) as client:
        yield client


async def collect(chunks: AsyncIterator[rt.StreamChunk]) -> list[rt.StreamChunk]:
    return [chunk async for chunk in chunks]


def stop_reason(chunks: list[rt.StreamChunk]) -> int:
    return chunks[-1].turn_completed.stop_reason


async def test_a_turn_streams_and_its_history_reads_back(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("Hello from the model"))
    chunks = await collect(api.stream_message("s1", "hi there"))
    assert kinds(chunks)[0] == "turn_started"
    assert kinds(chunks)[-2:] == ["assistant_message", "turn_completed"]
    deltas = "".join(c.assistant_delta.text for c in chunks)
    assert deltas == chunks[-2].assistant_message.content == "Hello from the model"
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert stop_reason(chunks) == rt.STOP_REASON_END_TURN

    session = await api.get_session("s1")
    assert session.message_count == 2
    messages = [m async for m in api.list_messages("s1")]
    assert [(m.role, m.content) for m in messages] == [
        (ses.ROLE_USER, "hi there"),
        (ses.ROLE_ASSISTANT, "Hello from the model"),
    ]


async def test_an_empty_session_id_gets_a_client_chosen_one(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("ok"))
    chunks = await collect(api.stream_message("", "hi"))
    assert chunks[0].session_id.startswith("ses_")
    assert (await api.get_session(chunks[0].session_id)).message_count == 2


async def test_tool_call_approval_edit_reject_and_tool_result(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(tool_call_answer("write_file", {"path": "a.txt", "content": "x"}))
    chunks = await collect(api.stream_message("s1", "write it"))
    call = chunks[-2].tool_call
    assert (call.tool_name, call.requires_approval) == ("write_file", True)
    assert stop_reason(chunks) == rt.STOP_REASON_AWAITING_APPROVAL
    pending = [a async for a in api.list_pending_approvals("s1")]
    assert [p.call_id for p in pending] == [call.call_id]
    assert arguments_of(pending[0]) == {"path": "a.txt", "content": "x"}

    edited = await collect(
        api.stream_message("s1", edit(call.call_id, {"path": "b.txt", "content": "y"}))
    )
    assert arguments_of(edited[-2].tool_call) == {"path": "b.txt", "content": "y"}
    assert stop_reason(edited) == rt.STOP_REASON_TOOL_CALL

    model_server.enqueue(text_answer("written"))
    after = await collect(api.stream_message("s1", tool_result(call.call_id, "wrote 1 byte")))
    assert after[-2].assistant_message.content == "written"

    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "rm -rf /", "timeout": 5}, call_id="c2"),
        text_answer("I will not do that"),
    )
    risky = await collect(api.stream_message("s1", "clean up"))
    assert arguments_of(risky[-2].tool_call) == {"command": "rm -rf /", "timeout": 5}  # int
    rejected = await collect(api.stream_message("s1", reject("c2", feedback="never")))
    assert rejected[-2].assistant_message.content == "I will not do that"
    messages = [m async for m in api.list_messages("s1")]
    answer = next(m for m in messages if m.tool_call_id == "c2")
    assert answer.is_error and "Feedback: never" in answer.content

    model_server.enqueue(tool_call_answer("write_file", {"path": "c", "content": ""}, call_id="c3"))
    await collect(api.stream_message("s1", "again"))
    approved = await collect(api.stream_message("s1", approve("c3")))
    assert (approved[-2].tool_call.call_id, approved[-2].tool_call.requires_approval) == (
        "c3",
        False,
    )


async def test_switching_agents_and_listing_them(api: AgentRuntimeClient) -> None:
    agents = await api.list_agents()
    assert {"coder", "architect"} <= {a.name for a in agents}
    await api.create_session("s1")
    chunks = await collect(api.stream_message("s1", switch_agent("architect", reason="plans")))
    assert chunks[1].agent_switched.to_agent == "architect"
    assert (await api.get_session("s1")).agent == "architect"


async def test_sessions_are_listed_across_pages_and_deleted(api: AgentRuntimeClient) -> None:
    for n in range(5):
        await api.create_session(f"s{n}", title=f"t{n}")
    listed = [s.session_id async for s in api.list_sessions(page_size=2)]
    assert sorted(listed) == [f"s{n}" for n in range(5)]
    await api.delete_session("s3")
    with pytest.raises(AgentRuntimeError) as raised:
        await api.get_session("s3")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.reason == "SESSION_DELETED"
    assert raised.value.domain == "agent-runtime"


async def test_errors_carry_the_code_reason_and_field_violations(api: AgentRuntimeClient) -> None:
    with pytest.raises(AgentRuntimeError) as raised:
        await collect(api.stream_message("bad id!", "hi"))
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_SESSION_ID"
    assert [v.field for v in error.field_violations] == ["session_id"]
    assert error.retry_delay is None
    assert "INVALID_ARGUMENT (INVALID_SESSION_ID)" in str(error)


async def test_a_busy_session_is_aborted_with_retry_info(
    runtime: bootstrap.RunningRuntime, api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(stall_after("thinking"))
    running = api.stream_message("s1", "first")
    started = await anext(running)
    async with AgentRuntimeClient(f"127.0.0.1:{runtime.port}", retry=NO_RETRIES) as impatient:
        with pytest.raises(AgentRuntimeError) as raised:
            await collect(impatient.stream_message("s1", "second"))
    error = raised.value
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "SESSION_BUSY")
    assert error.metadata["turn_id"] == started.turn_id
    assert error.retry_delay == 1.0
    await api.cancel_turn("s1", started.turn_id)
    rest = await collect(running)
    assert stop_reason(rest) == rt.STOP_REASON_CANCELLED


async def test_a_refused_connection_is_retried_for_reads(
    proxy: TcpProxy, proxied: AgentRuntimeClient, api: AgentRuntimeClient
) -> None:
    await api.create_session("s1")
    proxy.refuse_next(2)
    session = await proxied.get_session("s1")
    assert session.session_id == "s1"
    assert proxy.connections_accepted == 3


async def test_a_write_that_cannot_be_repeated_safely_is_not_retried(
    proxy: TcpProxy, proxied: AgentRuntimeClient, api: AgentRuntimeClient
) -> None:
    proxy.refuse_next(1)  # only one: a retry would get through, as reads do
    with pytest.raises(AgentRuntimeError) as raised:
        await proxied.create_session("s1")
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(AgentRuntimeError):
        await api.get_session("s1")


async def test_a_turn_whose_connection_was_refused_is_sent_again_and_runs_once(
    proxy: TcpProxy,
    proxied: AgentRuntimeClient,
    api: AgentRuntimeClient,
    model_server: FakeModelServer,
) -> None:
    model_server.enqueue(text_answer("only once"))
    proxy.refuse_next(1)
    chunks = await collect(proxied.stream_message("s1", "hello", client_message_id="k1"))
    assert chunks[-2].assistant_message.content == "only once"
    assert proxy.connections_accepted == 2
    assert len(model_server.requests) == 1
    assert [m.content async for m in api.list_messages("s1")] == ["hello", "only once"]


async def test_a_stream_broken_mid_turn_resumes_after_the_last_seq_without_duplicates(
    proxy: TcpProxy,
    proxied: AgentRuntimeClient,
    api: AgentRuntimeClient,
    model_server: FakeModelServer,
) -> None:
    gate = gate_the_answer(model_server)
    stream = proxied.stream_message("s1", "count")
    received = [await anext(stream), await anext(stream)]  # TurnStarted, the first delta
    assert kinds(received) == ["turn_started", "assistant_delta"]
    await break_after_the_turn_ends(proxy, gate, api, "s1")
    received += await collect(stream)
    assert_resumed_without_duplicates(received, proxy, model_server)


async def test_resume_stream_replays_a_finished_turn(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("done now"))
    chunks = await collect(api.stream_message("s1", "go"))
    replay = await collect(api.resume_stream("s1", chunks[0].turn_id, after_seq=1))
    assert kinds(replay) == ["assistant_message", "turn_completed"]
    assert replay == chunks[-2:]


async def test_stopping_iteration_cancels_the_turn_on_the_server(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(stall_after("partial answer"))
    stream = api.stream_message("s1", "go")
    first = await anext(stream)
    assert first.HasField("turn_started")
    await stream.aclose()

    async def cancelled() -> bool:
        return not (await api.get_session("s1")).running_turn_id

    await eventually(cancelled, what="the server to cancel the abandoned turn")
    replay = await collect(api.resume_stream("s1", first.turn_id))
    assert stop_reason(replay) == rt.STOP_REASON_CANCELLED


async def test_events_replay_from_a_cursor(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("noted"))
    await collect(api.stream_message("s1", "remember this"))
    events = api.watch_events(session_id="s1", after_event_id=0)
    seen = []
    async for event in events:
        seen.append(event)
        if event.type == event_pb2.EVENT_TYPE_TURN_COMPLETED:
            break
    await events.aclose()
    assert seen[0].type == event_pb2.EVENT_TYPE_TURN_STARTED
    assert {e.session_id for e in seen} == {"s1"}
    ids = [e.event_id for e in seen]
    assert ids == sorted(set(ids))


async def test_session_settings_and_a_requests_controls_reach_the_model(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    lint = declared_tool("ide_lint", "Lint a file", {"type": "object", "properties": {}})
    created = await api.create_session(
        "py-ctl", instructions="Be brief.", tools=[lint], generation=GenerationConfig(seed=3)
    )
    assert (created.instructions, [t.name for t in created.tools]) == ("Be brief.", ["ide_lint"])
    updated = await api.update_session("py-ctl", title="renamed")  # only what is given
    assert (updated.title, updated.instructions, updated.generation.seed) == (
        "renamed",
        "Be brief.",
        3,
    )
    fmt = declared_tool("ide_format", "Format a file", requires_approval=True)
    model_server.enqueue(text_answer("ok"))

    chunks = [
        c
        async for c in api.stream_message(
            "py-ctl", "hi", generation=GenerationConfig(temperature=0.5), tools=[fmt]
        )
    ]

    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    body = model_server.requests[0]
    assert (body["temperature"], body["seed"]) == (0.5, 3)
    assert [t["function"]["name"] for t in body["tools"]][-2:] == ["ide_lint", "ide_format"]
    assert body["messages"][0]["content"].endswith("Be brief.")
    cleared = await api.update_session("py-ctl", instructions="", tools=[])
    assert (cleared.instructions, list(cleared.tools)) == ("", [])
    # Grants are kept by id (the others revoked); one not in force is refused, naming it.
    with pytest.raises(AgentRuntimeError) as refused:
        await api.update_session("py-ctl", approval_grants=["grt_nope"])
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.field_violations] == [
        "session.approval_grants[0].grant_id"
    ]
    assert not (await api.update_session("py-ctl", approval_grants=[])).approval_grants


async def test_a_regenerate_carries_its_controls_and_a_page_shows_what_it_superseded(
    api: AgentRuntimeClient, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("first try"), text_answer("second try"))
    await collect(api.stream_message("s1", "tell me"))
    lint = declared_tool("ide_lint", "Lint a file")
    controls = GenerationConfig(temperature=0.9)
    await collect(api.stream_message("s1", regenerate(), generation=controls, tools=[lint]))

    body = model_server.requests[-1]
    assert body["temperature"] == 0.9
    assert [t["function"]["name"] for t in body["tools"]][-1] == "ide_lint"
    visible = await api.list_messages_page("s1")
    everything = await api.list_messages_page("s1", include_superseded=True)
    assert [m.content for m in visible.messages] == ["tell me", "second try"]
    assert [(m.content, bool(m.superseded_by_turn_id)) for m in everything.messages] == [
        ("tell me", False),
        ("first try", True),
        ("second try", False),
    ]
