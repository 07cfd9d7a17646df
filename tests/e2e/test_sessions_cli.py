"""`agent-runtime sessions list|show|delete` as a user runs them, against a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from agent_runtime import bootstrap
from agent_runtime.client import (
    AgentRuntimeClient,
    AgentRuntimeError,
    edit_message,
    reject,
    tool_result,
)
from tests.support.cli_process import run_cli
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer


@pytest.fixture
def target(runtime: bootstrap.RunningRuntime) -> str:
    return f"127.0.0.1:{runtime.port}"


@pytest.fixture
async def api(target: str) -> AsyncIterator[AgentRuntimeClient]:
    async with AgentRuntimeClient(target) as client:
        yield client


async def test_list_shows_every_session_as_a_table_and_as_json(
    api: AgentRuntimeClient, target: str
) -> None:
    await api.create_session("alpha", title="first one")
    await api.create_session("beta", agent="architect")

    table = await run_cli("sessions", "list", "--target", target)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["SESSION", "AGENT", "MESSAGES"]
    assert {row.split()[0]: row.split()[1] for row in rows} == {
        "alpha": "coder",
        "beta": "architect",
    }
    assert any(row.endswith("first one") for row in rows)

    listed = await run_cli("sessions", "list", "--json", "--target", target)
    assert {s["session_id"] for s in json.loads(listed.stdout)} == {"alpha", "beta"}


async def test_show_prints_the_session_and_its_messages(
    api: AgentRuntimeClient, target: str, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("write_file", {"path": "x.py", "content": "pass"}),
        text_answer("Fine, no file then"),
    )
    [c async for c in api.stream_message("s1", "write x.py")]
    [c async for c in api.stream_message("s1", reject("call_1", feedback="not now"))]

    shown = await run_cli("sessions", "show", "s1", "--target", target)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == ["session s1", "  agent: coder"]
    assert "messages: 4, pending approvals: 0" in shown.stdout
    assert "  usage: 24 tokens (10 prompt, 14 completion) in 2 turns" in shown.stdout
    turns = [line for line in shown.stdout.splitlines() if line.startswith("turn_")]
    assert [line.split()[3:5] for line in turns] == [
        ["awaiting_approval", "gpt-4o-mini"],
        ["end_turn", "gpt-4o-mini"],
    ]
    lines = [line for line in shown.stdout.splitlines() if line.startswith("#")]
    assert lines == [
        "#1 user: write x.py",
        '#2 assistant: -> write_file {"content": "pass", "path": "x.py"} [call_1]',
        "#3 tool [call_1, error]: not executed: the user rejected this tool call. "
        "Feedback: not now",
        "#4 assistant: Fine, no file then",
    ]

    as_json = json.loads(
        (await run_cli("sessions", "show", "s1", "--json", "--target", target)).stdout
    )
    assert as_json["session"]["session_id"] == "s1"
    assert as_json["session"]["usage"]["total_tokens"] == "24"  # uint64 in JSON: a string
    assert [t["stop_reason"] for t in as_json["turns"]] == [
        "STOP_REASON_AWAITING_APPROVAL",
        "STOP_REASON_END_TURN",
    ]
    assert [m["role"] for m in as_json["messages"]] == [
        "ROLE_USER",
        "ROLE_ASSISTANT",
        "ROLE_TOOL",
        "ROLE_ASSISTANT",
    ]


async def test_show_all_marks_what_an_edit_superseded_and_usage_prints_the_totals(
    api: AgentRuntimeClient, target: str, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        text_answer("cats", usage=(10, 1)),
        text_answer("dogs", usage=(20, 2)),
        text_answer("fish", usage=(30, 3)),
    )
    first = [c async for c in api.stream_message("s1", "tell me about cats")]
    asked = first[0].turn_started.input_message_id
    edited = [c async for c in api.stream_message("s1", edit_message(asked, "dogs"))]
    [c async for c in api.stream_message("s2", "and fish", model="other-model")]

    shown = await run_cli("sessions", "show", "s1", "--all", "--target", target)
    lines = [line for line in shown.stdout.splitlines() if line.startswith("#")]
    assert [line.split(":")[0] for line in lines] == [
        f"#1 user [superseded by {edited[0].turn_id}]",
        f"#2 assistant [superseded by {edited[0].turn_id}]",
        "#3 user",
        "#4 assistant",
    ]
    visible = await run_cli("sessions", "show", "s1", "--target", target)
    assert [line for line in visible.stdout.splitlines() if line.startswith("#")] == [
        "#3 user: dogs",
        "#4 assistant: dogs",
    ]

    total = await run_cli("usage", "--target", target)
    assert total.returncode == 0, total.stderr
    assert total.stdout.splitlines()[-1].split() == ["total", "3", "60", "6", "66"]
    by_model = await run_cli("usage", "--by", "model", "--from", "2000-01-01", "--target", target)
    assert [line.split() for line in by_model.stdout.splitlines()] == [
        ["MODEL", "TURNS", "PROMPT", "COMPLETION", "TOTAL"],
        ["gpt-4o-mini", "2", "30", "3", "33"],
        ["other-model", "1", "30", "3", "33"],
        ["total", "3", "60", "6", "66"],
    ]
    as_json = json.loads(
        (await run_cli("usage", "--by", "session", "--json", "--target", target)).stdout
    )
    assert [g["key"] for g in as_json["groups"]] == ["s1", "s2"]
    nothing = await run_cli("usage", "--to", "2000-01-01", "--target", target)
    assert nothing.stdout.splitlines()[-1].split() == ["total", "0", "0", "0", "0"]
    bad = await run_cli("usage", "--from", "yesterday", "--target", target)
    assert bad.returncode == 2 and "--from 'yesterday': not an ISO date" in bad.stderr


async def test_delete_removes_the_session_and_errors_name_the_reason(
    api: AgentRuntimeClient, target: str
) -> None:
    await api.create_session("doomed")
    deleted = await run_cli("sessions", "delete", "doomed", "--target", target)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted session doomed\n")
    with pytest.raises(AgentRuntimeError):
        await api.get_session("doomed")

    again = await run_cli("sessions", "delete", "doomed", "--target", target)
    assert again.returncode == 1
    assert (
        again.stderr == "agent-runtime: NOT_FOUND (SESSION_DELETED): session doomed was deleted\n"
    )
    missing = await run_cli("sessions", "show", "nope", "--target", target)
    assert missing.returncode == 1 and "SESSION_NOT_FOUND" in missing.stderr


async def test_bad_tls_flags_are_refused_before_connecting(target: str) -> None:
    result = await run_cli("sessions", "list", "--target", target, "--tls-cert", "/nonexistent")
    assert result.returncode == 2
    assert result.stderr == "agent-runtime: --tls-cert and --tls-key go together\n"
    unreadable = await run_cli("sessions", "list", "--tls-ca", "/nonexistent/ca.pem")
    assert unreadable.returncode == 2
    assert "cannot read /nonexistent/ca.pem" in unreadable.stderr


async def test_show_prints_control_characters_from_the_model_as_escapes(
    api: AgentRuntimeClient, target: str, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "a\x1b[2K\u202eb"}),
        text_answer("done\r\x1b]52;c;ZWNobw==\x07\x9b2J"),
    )
    [c async for c in api.stream_message("s1", "read it")]
    [c async for c in api.stream_message("s1", tool_result("call_1", "x\x1b[31my"))]

    shown = await run_cli("sessions", "show", "s1", "--target", target)
    assert shown.returncode == 0, shown.stderr
    messages = [line for line in shown.stdout.splitlines() if line.startswith("#")]
    assert messages == [
        "#1 user: read it",
        r'#2 assistant: -> read_file {"path": "a\u001b[2K\u202eb"} [call_1]',
        r"#3 tool [call_1]: x\u001b[31my",
        r"#4 assistant: done\r\u001b]52;c;ZWNobw==\u0007\u009b2J",
    ]
