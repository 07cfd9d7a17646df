"""A whole coding-agent conversation over real gRPC, a real SQLite file and a scripted
OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.grpc_helpers import (
    decision,
    kinds,
    only,
    rich_error,
    switch_agent,
    tool_result,
    user_message,
)
from tests.support.history import history_problems
from tests.support.runtime_fixtures import Client
from tests.support.waiting import eventually


async def history(client: Client, session_id: str) -> list[ses.Message]:
    page = await client.sessions.ListMessages(
        ses.ListMessagesRequest(session_id=session_id, page_size=1000)
    )
    return list(page.messages)


def assert_valid(messages: list[ses.Message]) -> None:
    roles = {ses.ROLE_USER: "user", ses.ROLE_ASSISTANT: "assistant", ses.ROLE_TOOL: "tool"}
    triples = [
        (roles[m.role], m.tool_calls[0].call_id if m.tool_calls else None, m.tool_call_id or None)
        for m in messages
    ]
    assert history_problems(triples) == []


def stop(chunks: list[rt.StreamChunk]) -> int:
    return only(chunks, "turn_completed").turn_completed.stop_reason


async def test_read_write_approve_and_finish(client: Client, model_server: FakeModelServer) -> None:
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "app.py"}, call_id="call_r"),
        tool_call_answer("write_file", {"path": "app.py", "content": "fixed\n"}, call_id="call_w"),
        text_answer("app.py is fixed."),
    )
    first = await client.turn(user_message("s1", "fix app.py"))
    read = only(first, "tool_call").tool_call
    assert (read.tool_name, read.requires_approval, stop(first)) == (
        "read_file",
        False,
        rt.STOP_REASON_TOOL_CALL,
    )

    second = await client.turn(tool_result("s1", "call_r", "print('bug')"))
    write = only(second, "tool_call").tool_call
    assert (write.call_id, write.requires_approval) == ("call_w", True)
    assert stop(second) == rt.STOP_REASON_AWAITING_APPROVAL
    # The model got the tool result, answering its call.
    assert model_server.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_r",
        "content": "print('bug')",
    }

    pending = await client.sessions.ListPendingApprovals(
        ses.ListPendingApprovalsRequest(session_id="s1")
    )
    assert [a.call_id for a in pending.approvals] == ["call_w"]
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await client.turn(tool_result("s1", "call_w", "ran it anyway"))
    error = rich_error(early.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.error_info is not None and error.error_info.reason == "APPROVAL_REQUIRED"

    approved = await client.turn(decision("s1", "call_w", rt.DECISION_APPROVE))
    assert kinds(approved) == ["turn_started", "tool_call", "turn_completed"]
    again = approved[1].tool_call
    assert (again.call_id, again.requires_approval, again.message_id) == (
        "call_w",
        False,
        write.message_id,
    )
    assert stop(approved) == rt.STOP_REASON_TOOL_CALL

    final = await client.turn(tool_result("s1", "call_w", "written"))
    assert only(final, "assistant_message").assistant_message.content == "app.py is fixed."

    messages = await history(client, "s1")
    assert [m.role for m in messages] == [
        ses.ROLE_USER,
        ses.ROLE_ASSISTANT,
        ses.ROLE_TOOL,
        ses.ROLE_ASSISTANT,
        ses.ROLE_TOOL,
        ses.ROLE_ASSISTANT,
    ]
    assert_valid(messages)
    session = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
    assert (session.session.pending_approvals_count, session.session.message_count) == (0, 6)

    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await client.turn(tool_result("s1", "call_w", "again"))
    assert rich_error(twice.value).error_info.reason == "ALREADY_ANSWERED"  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await client.turn(tool_result("s1", "call_nope", "x"))
    assert rich_error(unknown.value).code == grpc.StatusCode.NOT_FOUND


async def test_reject_lets_the_model_adapt(client: Client, model_server: FakeModelServer) -> None:
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": "rm -rf build"}, call_id="call_x"),
        text_answer("I will keep build/ then."),
    )
    await client.turn(user_message("s1", "clean up"))
    chunks = await client.turn(decision("s1", "call_x", rt.DECISION_REJECT, feedback="keep build/"))
    assert kinds(chunks)[-2:] == ["assistant_message", "turn_completed"]
    told = model_server.requests[1]["messages"][-1]
    assert told["role"] == "tool" and told["tool_call_id"] == "call_x"
    assert "rejected" in told["content"] and "keep build/" in told["content"]
    assert told["content"].startswith("ERROR: ")  # is_error is spelled out for the model
    assert_valid(await history(client, "s1"))


async def test_edit_runs_what_the_human_wrote(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "a.py", "content": "v1"}, call_id="call_e"),
        text_answer("Saved."),
    )
    await client.turn(user_message("s1", "write a.py"))
    chunks = await client.turn(
        decision("s1", "call_e", rt.DECISION_EDIT, edited={"path": "a.py", "content": "v2"})
    )
    call = only(chunks, "tool_call").tool_call
    assert json_format.MessageToDict(call.arguments) == {"path": "a.py", "content": "v2"}
    messages = await history(client, "s1")
    assert json_format.MessageToDict(messages[1].tool_calls[0].arguments)["content"] == "v2"
    await client.turn(tool_result("s1", "call_e", "ok"))
    sent = model_server.requests[-1]["messages"]
    assert '"v2"' in sent[-2]["tool_calls"][0]["function"]["arguments"]


async def test_restricted_call_and_switch_mode_never_reach_the_client(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "main.py", "content": "x"}, call_id="call_py"),
        tool_call_answer(
            "switch_mode", {"mode": "coder", "reason": "needs code"}, call_id="call_sw"
        ),
        tool_call_answer("write_file", {"path": "main.py", "content": "x"}, call_id="call_ok"),
    )
    await client.turn(switch_agent("s1", "architect", "plan first"))
    chunks = await client.turn(user_message("s1", "change main.py"))
    assert [c.tool_call.call_id for c in chunks if c.HasField("tool_call")] == ["call_ok"]
    switched = only(chunks, "agent_switched").agent_switched
    assert (switched.from_agent, switched.to_agent) == ("architect", "coder")
    refusal = model_server.requests[1]["messages"][-1]
    assert refusal["role"] == "tool" and "main.py" in refusal["content"]
    session = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert session.agent == "coder"
    assert [(s.from_agent, s.to_agent) for s in session.agent_history] == [
        ("coder", "architect"),
        ("architect", "coder"),
    ]
    assert session.agent_switch_count == 2
    # ListSessions shows them as GetSession does (read for the whole page at once).
    model_server.enqueue(text_answer("hi"))
    await client.turn(user_message("s2", "hello"))  # a session with none beside it
    listed = (await client.sessions.ListSessions(ses.ListSessionsRequest())).sessions
    assert {s.session_id: (list(s.agent_history), s.agent_switch_count) for s in listed} == {
        "s1": (list(session.agent_history), 2),
        "s2": ([], 0),
    }
    assert_valid(await history(client, "s1"))


@pytest.mark.parametrize(
    ("answer", "message", "expected"),
    [
        ('{"agent": "debug", "confidence": 0.9, "reason": "stack trace"}', "help me", "debug"),
        ("no idea", "please design the architecture of the plugin system", "architect"),
        ("{broken", "hello", "coder"),
    ],
)
async def test_orchestrator_routes_the_first_message(
    client: Client, model_server: FakeModelServer, answer: str, message: str, expected: str
) -> None:
    model_server.enqueue(text_answer(answer), text_answer("Routed answer."))
    await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="s1", agent="orchestrator")
    )
    chunks = await client.turn(user_message("s1", message))
    switched = only(chunks, "agent_switched").agent_switched
    assert (switched.from_agent, switched.to_agent) == ("orchestrator", expected)
    assert "tools" not in model_server.requests[0]
    assert only(chunks, "assistant_message").assistant_message.content == "Routed answer."


async def test_list_agents(client: Client) -> None:
    agents = {a.name: a for a in (await client.agents.ListAgents(ag.ListAgentsRequest())).agents}
    assert set(agents) == {"coder", "architect", "debug", "ask", "orchestrator"}
    assert agents["coder"].is_default
    assert "write_file" not in agents["ask"].allowed_tools
    assert agents["architect"].path_restrictions[0].allowed_path_regex == r"\.md$"
    assert "execute_command" in agents["coder"].approval_rules


class TestExpiry:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"turns": {"approval_ttl_seconds": 0.05}}

    async def test_expired_approval_behaves_as_rejected(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        model_server.enqueue(
            tool_call_answer("delete_file", {"path": "old.py"}, call_id="call_d"),
            text_answer("Left it alone."),
        )
        await client.turn(user_message("s1", "delete old.py"))

        async def expired() -> bool:
            page = await client.sessions.ListPendingApprovals(
                ses.ListPendingApprovalsRequest(session_id="s1")
            )
            return not page.approvals

        await eventually(expired, what="the approval to expire")
        chunks = await client.turn(decision("s1", "call_d", rt.DECISION_APPROVE))
        assert not [c for c in chunks if c.HasField("tool_call")]
        assert only(chunks, "assistant_message").assistant_message.content == "Left it alone."
        told = model_server.requests[-1]["messages"][-1]
        assert told["tool_call_id"] == "call_d" and "expired" in told["content"]


class TestAgentsFile:
    @pytest.fixture
    def settings_overrides(self, tmp_path: Any) -> dict[str, Any]:
        path = tmp_path / "agents.toml"
        path.write_text(
            'default_agent = "reviewer"\n'
            "[agents.reviewer]\n"
            'description = "Reviews code"\n'
            'system_prompt = "You are a meticulous reviewer."\n'
            'allowed_tools = ["read_file"]\n'
        )
        return {"server": {"agents_file": str(path)}}

    async def test_agents_from_the_file_are_served(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        listed = await client.agents.ListAgents(ag.ListAgentsRequest())
        reviewer = next(a for a in listed.agents if a.name == "reviewer")
        assert reviewer.is_default and list(reviewer.allowed_tools) == ["read_file"]
        model_server.enqueue(text_answer("Looks good."))
        chunks = await client.turn(user_message("s1", "review this"))
        assert only(chunks, "turn_started").turn_started.agent == "reviewer"
        sent = model_server.requests[0]
        assert sent["messages"][0]["content"] == "You are a meticulous reviewer."
        assert [t["function"]["name"] for t in sent["tools"]] == ["read_file"]
