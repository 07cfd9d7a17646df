"""Issue 19 end to end: generation settings, session instructions, client-declared tools,
streamed reasoning and tool arguments, the token-aware context window. A real gRPC port, a
real database and a real HTTP model endpoint that records every request body, so each test
asserts exactly what the model received."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agent_runtime.domain.agents import CLIENT_INSTRUCTIONS_HEADING
from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import (
    FakeModelServer,
    reasoning_answer,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import kinds, read_rest, rich_error, tool_result, user_message
from tests.support.runtime_fixtures import Client, connect, running_runtime

AGENTS = """
[agents.coder]
approval_rules = ["write_file", "ide_deploy*"]
[agents.coder.generation]
temperature = 0.1
max_output_tokens = 500
seed = 42

[agents.thinker]
description = "Reasons aloud and keeps its reasoning"
system_prompt = "You think first."
allowed_tools = ["read_file"]
client_tools = ["ide_*"]
store_reasoning = true

[agents.quiet]
description = "Reasons silently"
system_prompt = "You think quietly."
allowed_tools = []
stream_reasoning = false
context_window_tokens = 32000
[agents.quiet.generation]
top_p = 0.5
stop = ["END"]
tool_choice = { tool = "ide_lint" }
"""

LINT_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "pattern": "\\.py$"},
        "max_problems": {"type": "integer", "minimum": 1},
    },
    "required": ["path"],
    "additionalProperties": False,
}


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS, encoding="utf-8")
    return {"server": {"agents_file": str(agents)}, "turns": {"context_window_tokens": 4_000}}


def tool(name: str, schema: dict[str, Any] | None = None, **fields: Any) -> mc.ToolDefinition:
    definition = mc.ToolDefinition(name=name, description=f"the IDE's {name}", **fields)
    if schema is not None:
        definition.parameters.update(schema)
    return definition


async def collect(client: Client, request: rt.StreamMessageRequest) -> list[rt.StreamChunk]:
    return [chunk async for chunk in client.runtime.StreamMessage(request)]


def finals(chunks: list[rt.StreamChunk]) -> list[rt.StreamChunk]:
    """Without the deltas (text, reasoning, tool arguments)."""
    deltas = ("assistant_delta", "reasoning_delta", "tool_call_delta")
    return [c for c in chunks if c.WhichOneof("chunk") not in deltas]


def offered(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


async def create(client: Client, session_id: str, **fields: Any) -> ses.Session:
    response: ses.CreateSessionResponse = await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id=session_id, **fields)
    )
    return response.session


# -- generation settings ---------------------------------------------------------------------


async def test_the_request_wins_over_the_session_which_wins_over_the_agent(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("one"), text_answer("two"))
    await create(
        client,
        "s1",
        generation=mc.GenerationConfig(temperature=0.3, top_p=0.5, stop=["END"]),
    )

    await collect(client, user_message("s1", "plain"))
    request = user_message("s1", "hotter")
    request.generation.temperature = 0.9
    request.generation.reasoning_effort = "high"
    await collect(client, request)

    controls = ("temperature", "top_p", "max_completion_tokens", "stop", "seed", "reasoning_effort")
    first, second = ({k: body[k] for k in controls if k in body} for body in model_server.requests)
    assert first == {
        "temperature": 0.3,  # the session's, over the agent's 0.1
        "top_p": 0.5,
        "max_completion_tokens": 500,  # the agent's
        "stop": ["END"],
        "seed": 42,
    }
    assert second == {**first, "temperature": 0.9, "reasoning_effort": "high"}


async def test_out_of_range_settings_are_refused_with_field_violations(
    client: Client, model_server: FakeModelServer
) -> None:
    request = user_message("s1", "hi")
    request.generation.temperature = 2.5
    request.generation.top_p = 0
    request.generation.stop.extend(["a", "b", "c", "d", "e"])
    request.generation.reasoning_effort = "maximal"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, request)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.error_info is not None
    assert error.error_info.reason == "INVALID_GENERATION_CONFIG"
    assert [field for field, _ in error.field_violations] == [
        "generation.temperature",
        "generation.top_p",
        "generation.stop",
        "generation.reasoning_effort",
    ]
    assert model_server.requests == []  # refused before anything was stored or asked


async def test_a_named_tool_choice_is_sent_and_an_unknown_one_refused(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("ok"))
    request = user_message("s1", "lint it")
    request.tools.append(tool("ide_lint", LINT_SCHEMA))
    request.generation.tool_choice.tool_name = "ide_lint"
    await collect(client, request)

    body = model_server.requests[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "ide_lint"}}
    assert body["parallel_tool_calls"] is False

    unknown = user_message("s1", "again")
    unknown.generation.tool_choice.tool_name = "ide_lint"  # this request declares no such tool
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, unknown)
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations[0][0] == "generation.tool_choice.tool_name"


# -- instructions and UpdateSession ----------------------------------------------------------


async def test_instructions_are_appended_to_the_system_prompt_under_their_heading(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("oui"), text_answer("ja"))
    session = await create(client, "s1", instructions="Answer in French.")
    assert session.instructions == "Answer in French."

    await collect(client, user_message("s1", "hello"))
    await client.sessions.UpdateSession(
        ses.UpdateSessionRequest(
            session=ses.Session(session_id="s1", instructions="Answer in German."),
            update_mask=field_mask_pb2.FieldMask(paths=["instructions"]),
        )
    )
    await collect(client, user_message("s1", "hello again"))

    prompts = [body["messages"][0] for body in model_server.requests]
    assert all(p["role"] == "system" for p in prompts)
    assert prompts[0]["content"].startswith("You are an expert software engineer")
    assert prompts[0]["content"].endswith(f"\n\n{CLIENT_INSTRUCTIONS_HEADING}\n\nAnswer in French.")
    assert prompts[1]["content"].endswith(f"{CLIENT_INSTRUCTIONS_HEADING}\n\nAnswer in German.")


async def test_create_and_update_answer_the_instructions_as_get_session_reads_them(
    client: Client,
) -> None:
    created = await create(client, "s1", instructions="use tabs\x00")
    updated: ses.UpdateSessionResponse = await client.sessions.UpdateSession(
        ses.UpdateSessionRequest(
            session=ses.Session(session_id="s1", instructions="x\x00y"),
            update_mask=field_mask_pb2.FieldMask(paths=["instructions"]),
        )
    )
    got = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert created.instructions == "use tabs\ufffd"  # NUL: stored as U+FFFD (domain/text.py)
    assert updated.session.instructions == got.instructions == "x\ufffdy"


async def test_update_session_follows_the_update_mask(client: Client) -> None:
    await create(
        client,
        "s1",
        title="first",
        instructions="be brief",
        tools=[tool("ide_lint", LINT_SCHEMA)],
        generation=mc.GenerationConfig(temperature=0.2, seed=1),
    )

    async def update(paths: list[str] | None, **fields: Any) -> ses.Session:
        request = ses.UpdateSessionRequest(session=ses.Session(session_id="s1", **fields))
        if paths is not None:
            request.update_mask.paths.extend(paths)
        response: ses.UpdateSessionResponse = await client.sessions.UpdateSession(request)
        return response.session

    # Only what the mask names changes; a named field left empty is cleared.
    changed = await update(["title", "generation.seed"], title="second", instructions="ignored")
    assert (changed.title, changed.instructions) == ("second", "be brief")
    assert changed.generation.temperature == 0.2 and not changed.generation.HasField("seed")
    # No mask: every populated field.
    changed = await update(None, instructions="be thorough", agent="thinker")
    assert (changed.title, changed.instructions, changed.agent) == (
        "second",
        "be thorough",
        "thinker",
    )
    assert changed.agent_history[-1].to_agent == "thinker"
    assert changed.agent_history[-1].reason == "changed by UpdateSession"
    assert [t.name for t in changed.tools] == ["ide_lint"]
    # "*": everything replaced, what is not given cleared.
    changed = await update(["*"], title="third")
    assert changed.title == "third"
    assert (changed.instructions, list(changed.tools), changed.agent) == ("", [], "coder")
    assert not changed.HasField("generation")
    got = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert got == changed


@pytest.mark.parametrize(
    ("paths", "reason", "field"),
    [
        (["titel"], "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
        (["title", "message_count"], "INVALID_UPDATE_MASK", "update_mask.paths[1]"),
        (["generation.top_k"], "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
        (["*", "title"], "INVALID_UPDATE_MASK", "update_mask.paths[0]"),
        (["agent"], "UNKNOWN_AGENT", "session.agent"),
    ],
)
async def test_a_bad_update_mask_is_invalid_argument(
    client: Client, paths: list[str], reason: str, field: str
) -> None:
    await create(client, "s1", title="kept")
    request = ses.UpdateSessionRequest(
        session=ses.Session(session_id="s1", title="new", agent="nobody"),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.UpdateSession(request)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.error_info is not None and error.error_info.reason == reason
    assert error.field_violations[0][0] == field
    got = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert got.title == "kept"


async def test_update_session_of_another_tenant_or_unknown_session_is_not_found(
    client: Client,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.UpdateSession(
            ses.UpdateSessionRequest(session=ses.Session(session_id="nope", title="x"))
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- client-declared tools -------------------------------------------------------------------


async def test_declared_tools_are_offered_after_the_built_in_ones_with_their_schemas(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("ok"))
    await create(client, "s1", tools=[tool("ide_lint", LINT_SCHEMA)])
    request = user_message("s1", "hi")
    request.tools.append(tool("ide_open_file", {"type": "object", "properties": {}}))
    await collect(client, request)

    body = model_server.requests[0]
    names = offered(body)
    assert names[-2:] == ["ide_lint", "ide_open_file"]
    assert "read_file" in names[:-2]
    lint = body["tools"][-2]["function"]
    assert lint["description"] == "the IDE's ide_lint"
    assert lint["parameters"] == LINT_SCHEMA  # whole numbers stay whole numbers
    assert body["parallel_tool_calls"] is False


async def test_the_schema_check_thread_ends_with_the_server(
    model_server: FakeModelServer, database_url: str, settings_overrides: dict[str, Any]
) -> None:
    """Schemas are checked on a thread of the server's (a new schema starts it): stopping the
    server ends it, as it ends the server's other resources."""

    def schema_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("schema-check")]

    async with running_runtime(model_server, database_url, settings_overrides) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await create(connect(channel), "s1", tools=[tool("ide_lint", LINT_SCHEMA)])
        started = schema_threads()
        assert started, "checking a new schema starts the thread"
    assert not [t for t in started if t.is_alive()]


async def test_arguments_that_break_the_schema_are_a_tool_error_for_the_model(
    client: Client, model_server: FakeModelServer
) -> None:
    await create(client, "s1", tools=[tool("ide_lint", LINT_SCHEMA)])
    model_server.enqueue(
        tool_call_answer("ide_lint", {"path": "notes.txt", "max_problems": 0}, call_id="c1"),
        tool_call_answer("ide_lint", {"path": "main.py"}, call_id="c2"),
    )

    chunks = finals(await collect(client, user_message("s1", "lint main")))

    # The first call never reached the client: the model read why, and tried again.
    assert kinds(chunks) == ["turn_started", "tool_call", "turn_completed"]
    call = chunks[1].tool_call
    assert (call.call_id, call.tool_name, call.requires_approval) == ("c2", "ide_lint", False)
    assert json_format.MessageToDict(call.arguments) == {"path": "main.py"}
    error = model_server.requests[1]["messages"][-1]
    assert error["role"] == "tool" and error["tool_call_id"] == "c1"
    assert "does not match" in error["content"]  # the pattern
    assert "arguments.max_problems" in error["content"]  # and the minimum
    # The client runs it and answers as for a built-in tool.
    model_server.enqueue(text_answer("no problems"))
    done = finals(await collect(client, tool_result("s1", "c2", "0 problems")))
    assert done[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN


async def test_approval_rules_and_requires_approval_apply_to_declared_tools(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("ide_deploy_staging", {}, call_id="c1"),
        tool_call_answer("ide_format", {}, call_id="c2"),
    )
    request = user_message("s1", "deploy")
    request.tools.extend([tool("ide_deploy_staging"), tool("ide_format", requires_approval=True)])
    ruled = finals(await collect(client, request))
    assert ruled[1].tool_call.requires_approval
    assert "ide_deploy*" in ruled[1].tool_call.approval_reason  # the agent's glob rule

    reject = rt.StreamMessageRequest(
        session_id="s1",
        approval_decision=rt.ApprovalDecision(call_id="c1", decision=rt.DECISION_REJECT),
    )
    reject.tools.extend(request.tools)  # per-request tools: sent again with the next input
    declared = finals(await collect(client, reject))
    assert declared[1].tool_call.tool_name == "ide_format"
    assert declared[1].tool_call.requires_approval
    assert "declared ide_format as needing approval" in declared[1].tool_call.approval_reason


async def test_an_agents_client_tools_patterns_filter_declared_tools(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("ok"), tool_call_answer("other_tool", {}, call_id="c1"))
    model_server.enqueue(text_answer("fine"))
    await create(
        client, "s1", agent="thinker", tools=[tool("ide_lint", LINT_SCHEMA), tool("other_tool")]
    )

    await collect(client, user_message("s1", "hi"))
    chunks = finals(await collect(client, user_message("s1", "use the other one")))

    assert offered(model_server.requests[0]) == ["read_file", "ide_lint"]
    assert kinds(chunks)[-1] == "turn_completed"
    assert "tool_call" not in kinds(chunks)  # refused: not offered to this agent
    assert "may not call tool 'other_tool'" in model_server.requests[2]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("declared", "reason", "field", "says"),
    [
        ([tool("read_file")], "TOOL_NAME_CLASH", "tools[0].name", "built-in tool"),
        ([tool("x"), tool("x")], "TOOL_NAME_CLASH", "tools[1].name", "declared twice"),
        ([tool("bad name")], "INVALID_TOOL_DEFINITION", "tools[0].name", "[A-Za-z0-9_-]"),
        (
            [tool("ok"), tool("typo", {"type": "objekt"})],
            "INVALID_TOOL_DEFINITION",
            "tools[1].parameters",
            "tool 'typo': not a valid JSON Schema",
        ),
        (
            [tool("remote", {"type": "object", "$ref": "https://example.com/s.json"})],
            "INVALID_TOOL_DEFINITION",
            "tools[0].parameters",
            "points outside the schema",
        ),
        (
            [tool("list", {"type": "array"})],
            "INVALID_TOOL_DEFINITION",
            "tools[0].parameters",
            "must describe an object",
        ),
    ],
)
async def test_tools_that_cannot_be_declared_are_invalid_argument_naming_the_tool(
    client: Client,
    model_server: FakeModelServer,
    declared: list[mc.ToolDefinition],
    reason: str,
    field: str,
    says: str,
) -> None:
    for attempt in ("create", "stream"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if attempt == "create":
                await create(client, "s1", tools=declared)
            else:
                request = user_message("s1", "hi")
                request.tools.extend(declared)
                await collect(client, request)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.error_info is not None and error.error_info.reason == reason
        assert (field, says) == (error.field_violations[0][0], says)
        assert says in error.field_violations[0][1]
    assert model_server.requests == []


async def test_a_request_tool_the_session_declares_already_is_a_clash(
    client: Client, model_server: FakeModelServer
) -> None:
    await create(client, "s1", tools=[tool("ide_lint", LINT_SCHEMA)])
    request = user_message("s1", "hi")
    request.tools.append(tool("ide_lint"))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, request)

    error = rich_error(caught.value)
    assert error.error_info is not None and error.error_info.reason == "TOOL_NAME_CLASH"
    assert "declared on the session already" in error.field_violations[0][1]


async def test_a_huge_deep_or_crowded_schema_is_refused(client: Client) -> None:
    deep: dict[str, Any] = {"type": "object"}
    node = deep
    for _ in range(12):  # 25 levels: within what protobuf carries, past what a schema may
        node["properties"] = {"x": {"type": "object"}}
        node = node["properties"]["x"]
    huge = {"type": "object", "description": "x" * 70_000}
    # 5,000 objects in 15 KB: each costs its share of the (seconds long) validity check.
    crowded = {"type": "object", "anyOf": [{} for _ in range(5_000)]}

    for schema, says in (
        (deep, "nests deeper"),
        (huge, "bytes; at most"),
        (crowded, "more than 4096 objects"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(client, "s1", tools=[tool("t", schema)])
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert says in error.field_violations[0][1]


async def test_list_agents_shows_each_agents_model_and_tool_settings(client: Client) -> None:
    response: ag.ListAgentsResponse = await client.agents.ListAgents(ag.ListAgentsRequest())
    agents = {agent.name: agent for agent in response.agents}

    settings = {
        name: json_format.MessageToDict(agents[name], preserving_proto_field_name=True)
        for name in ("coder", "thinker", "quiet")
    }
    shown = ("generation", "client_tools", "context_window_tokens", "stream_reasoning")
    assert {name: {k: v for k, v in s.items() if k in shown} for name, s in settings.items()} == {
        "coder": {
            "generation": {"temperature": 0.1, "max_output_tokens": 500, "seed": "42"},
            "client_tools": ["*"],
            "stream_reasoning": True,
        },
        "thinker": {"generation": {}, "client_tools": ["ide_*"], "stream_reasoning": True},
        "quiet": {
            "generation": {"top_p": 0.5, "stop": ["END"], "tool_choice": {"tool_name": "ide_lint"}},
            "client_tools": ["*"],
            "context_window_tokens": "32000",  # proto3 JSON writes 64-bit integers as strings
        },
    }
    assert [a.store_reasoning for a in (agents["coder"], agents["thinker"])] == [False, True]
    assert agents["orchestrator"].client_tools == []  # it routes: offered no declared tool
    assert [(r.tool, r.action) for r in agents["coder"].rules] == [
        ("write_file", ag.RULE_ACTION_ASK),
        ("ide_deploy*", ag.RULE_ACTION_ASK),
    ]


# -- streamed reasoning and tool arguments ---------------------------------------------------


async def test_reasoning_streams_dimly_but_is_neither_stored_nor_sent_back(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(reasoning_answer("Let me think. ", "Forty-two."), text_answer("ok"))

    chunks = await collect(client, user_message("s1", "the answer?"))
    await collect(client, user_message("s1", "thanks"))

    reasoning = "".join(c.reasoning_delta.text for c in chunks if c.HasField("reasoning_delta"))
    assert reasoning == "Let me think. "
    assert kinds(finals(chunks)) == ["turn_started", "assistant_message", "turn_completed"]
    messages = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert [m.reasoning for m in messages.messages] == ["", "", "", ""]
    sent_back = json.dumps(model_server.requests[1]["messages"])
    assert "Let me think" not in sent_back and "Forty-two." in sent_back


async def test_an_agent_may_store_its_reasoning_or_keep_it_quiet(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        reasoning_answer("Kept. ", "A."), reasoning_answer("Hidden. ", "B.", key="reasoning")
    )
    await create(client, "kept", agent="thinker")
    await create(client, "quiet", agent="quiet")

    await collect(client, user_message("kept", "q"))
    quiet = await collect(client, user_message("quiet", "q"))

    kept = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="kept"))
    assert [m.reasoning for m in kept.messages] == ["", "Kept. "]
    assert not any(c.HasField("reasoning_delta") for c in quiet)


# -- the token-aware context window ----------------------------------------------------------


async def test_a_large_tool_result_is_cut_for_the_model_and_stored_whole(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(tool_call_answer("read_file", {"path": "big.log"}, call_id="c1"))
    model_server.enqueue(text_answer("it is long"))
    await collect(client, user_message("s1", "read the log"))
    log = "START\n" + "line of the log\n" * 4_000 + "END"  # ~16k tokens, the window is 4k

    await collect(client, tool_result("s1", "c1", log))

    sent = model_server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    result = sent[-1]["content"]
    assert result.startswith("START") and result.endswith("END")
    assert "characters cut from the middle by the runtime" in result
    assert len(result) < len(log) // 3
    stored = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert stored.messages[2].content == log


async def test_a_call_with_huge_nested_arguments_is_cut_for_the_model_and_stored_whole(
    client: Client, model_server: FakeModelServer
) -> None:
    edits = {"edits": [{"path": f"src/f{i}.py", "content": "x = 1\n" * 2_000} for i in range(8)]}
    await create(client, "s1", tools=[tool("ide_apply_edits", {"type": "object"})])
    # No usage reported: the estimate stays uncalibrated (the scripted counts are not real).
    model_server.enqueue(tool_call_answer("ide_apply_edits", edits, call_id="c1", usage=None))
    model_server.enqueue(text_answer("applied", usage=None))
    await collect(client, user_message("s1", "apply the edits"))

    await collect(client, tool_result("s1", "c1", "8 files changed"))

    sent = model_server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    arguments = json.loads(sent[2]["tool_calls"][0]["function"]["arguments"])
    assert list(arguments) == ["arguments_json_cut_by_the_runtime"]  # no one text to cut
    assert arguments["arguments_json_cut_by_the_runtime"].startswith('{"edits": [{"path": "src/f0')
    # Within the 4,000-token window: 4 bytes a token, the system prompt included (the texts
    # as the model reads them, without the escapes of the request's JSON around them).
    texts = [m["content"] or "" for m in sent]
    texts += [c["function"]["arguments"] for m in sent for c in m.get("tool_calls", [])]
    assert sum(len(text.encode()) for text in texts) < 4_000 * 4 < len(json.dumps(edits)) // 4
    stored = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    assert json_format.MessageToDict(stored.messages[1].tool_calls[0].arguments) == edits


async def test_old_messages_leave_the_window_first_and_the_newest_question_stays(
    client: Client, model_server: FakeModelServer
) -> None:
    for index in range(6):
        # No usage reported: the estimate stays uncalibrated (the scripted counts are not real).
        model_server.enqueue(text_answer(f"answer {index} " + "words " * 400, usage=None))
        await collect(client, user_message("s1", f"question {index} " + "more " * 400))

    last = model_server.requests[-1]["messages"]
    contents = [m["content"] for m in last[1:]]
    assert contents[-1].startswith("question 5")
    assert not any(c.startswith("question 0") for c in contents)  # dropped, oldest first
    assert len(json.dumps(last)) // 4 < 4_000 * 1.5


async def test_the_estimate_is_calibrated_by_the_prompt_tokens_the_model_reports(
    client: Client, model_server: FakeModelServer
) -> None:
    for index in range(4):
        model_server.enqueue(text_answer(f"answer {index} " + "w " * 300, usage=None))
        await collect(client, user_message("s1", f"question {index} " + "q " * 300))
    uncalibrated = len(model_server.requests[-1]["messages"])
    # The model counts far more tokens than the estimate said: the window shrinks.
    model_server.enqueue(text_answer("short", usage=(100_000, 1)), text_answer("again"))
    await collect(client, user_message("s1", "question 4"))
    await collect(client, user_message("s1", "question 5"))

    assert uncalibrated == 1 + 7  # the system prompt and everything: it fitted
    calibrated = model_server.requests[-1]["messages"]
    assert len(calibrated) < uncalibrated
    assert calibrated[-1]["content"] == "question 5"


async def test_update_session_waits_for_no_turn_it_is_refused_while_one_runs(
    client: Client, model_server: FakeModelServer
) -> None:
    model_asked = asyncio.Event()
    release = asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        model_asked.set()
        await release.wait()

    model_server.on_request = hold
    model_server.enqueue(text_answer("slow"))
    running = client.runtime.StreamMessage(user_message("s1", "go"))
    started = await running.read()
    await model_asked.wait()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.UpdateSession(
            ses.UpdateSessionRequest(session=ses.Session(session_id="s1", instructions="x"))
        )
    release.set()
    await read_rest(running)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.ABORTED
    assert error.error_info is not None and error.error_info.reason == "SESSION_BUSY"
    assert error.error_info.metadata["turn_id"] == started.turn_id


async def test_the_same_key_with_other_settings_is_another_input(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("once"))
    first = user_message("s1", "hi", client_message_id="k1")
    first.generation.temperature = 0.5
    original = await collect(client, first)

    retried = await collect(client, first)  # the same input: the same turn, replayed
    changed = user_message("s1", "hi", client_message_id="k1")
    changed.generation.temperature = 0.6
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(client, changed)

    assert retried[0].turn_id == original[0].turn_id
    assert len(model_server.requests) == 1
    error = rich_error(caught.value)
    assert error.error_info is not None and error.error_info.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_page_of_sessions_leaves_the_declared_tools_out(client: Client) -> None:
    await create(client, "s1", tools=[tool("ide_lint", LINT_SCHEMA)], instructions="brief")

    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))

    (summary,) = listed.sessions
    assert (summary.instructions, list(summary.tools)) == ("brief", [])
    assert [t.name for t in got.session.tools] == ["ide_lint"]
