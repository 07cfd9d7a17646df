"""The model client and the controls of issue 19, against a real HTTP model endpoint: the
generation settings and tool choice in the request body (only those set, under OpenAI's
names), `parallel_tool_calls`, and what it streams besides text (reasoning, the first tool
call's arguments)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import pytest

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.generation import GenerationConfig, ToolChoice, ToolChoiceMode
from agent_runtime.domain.model_output import (
    ReasoningText,
    TextDelta,
    ToolCallFragment,
)
from agent_runtime.domain.tools import TOOL_CATALOGUE, declared_tool
from agent_runtime.infrastructure.llm.untrusted_output import AnswerLimits
from tests.integration.test_openai_compatible_client import (  # fixtures and helpers
    chat,
    chunk,
    collect,
    final,
    http,
    make_client,
    server,
    sse,
    transport,
    usage_chunk,
)
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    raw_sse,
    reasoning_answer,
    text_answer,
    tool_call_answer,
)

__all__ = ["http", "server", "transport"]  # fixtures, imported to be used here

READ_FILE = TOOL_CATALOGUE["read_file"]
LINT = declared_tool(
    "lint",
    "Run the IDE's linter on a file",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
BODY_CONTROLS = (
    "temperature",
    "top_p",
    "max_completion_tokens",
    "max_tokens",
    "stop",
    "seed",
    "reasoning_effort",
    "tool_choice",
    "parallel_tool_calls",
)


async def test_only_the_generation_settings_that_are_set_are_sent(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("a"), text_answer("b"))
    client = make_client(server, http)

    await collect(client, chat())
    generation = GenerationConfig(
        temperature=0.0,
        top_p=0.9,
        max_output_tokens=256,
        stop=("\n\n", "END"),
        seed=-7,
        reasoning_effort="low",
    )
    await collect(client, _with(chat(), generation=generation))

    bare, configured = server.requests
    assert not set(BODY_CONTROLS) & set(bare)  # nothing set: nothing sent (no tools either)
    assert {key: configured[key] for key in BODY_CONTROLS if key in configured} == {
        "temperature": 0.0,
        "top_p": 0.9,
        "max_completion_tokens": 256,
        "stop": ["\n\n", "END"],
        "seed": -7,
        "reasoning_effort": "low",
    }


async def test_the_output_token_limit_goes_where_the_endpoint_reads_it(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("a"))
    client = make_client(server, http, max_tokens_field="max_tokens")

    await collect(client, _with(chat(), generation=GenerationConfig(max_output_tokens=9)))

    assert server.requests[0]["max_tokens"] == 9
    assert "max_completion_tokens" not in server.requests[0]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), "auto"),
        (ToolChoice(ToolChoiceMode.NONE), "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), "required"),
        (ToolChoice.named("lint"), {"type": "function", "function": {"name": "lint"}}),
    ],
)
async def test_tool_choice_is_sent_with_the_tools(
    server: FakeModelServer, http: httpx.AsyncClient, choice: ToolChoice, sent: object
) -> None:
    server.enqueue(text_answer("a"), text_answer("b"))
    client = make_client(server, http)
    generation = GenerationConfig(tool_choice=choice)

    await collect(client, _with(chat(tools=[READ_FILE, LINT]), generation=generation))
    await collect(client, _with(chat(tools=[]), generation=generation))

    with_tools, without = server.requests
    assert with_tools["tool_choice"] == sent
    assert with_tools["parallel_tool_calls"] is False
    assert [tool["function"]["name"] for tool in with_tools["tools"]] == ["read_file", "lint"]
    assert with_tools["tools"][1]["function"]["parameters"] == LINT.parameters
    # No tools, no tool choice: OpenAI refuses one without the other.
    assert "tool_choice" not in without
    assert "parallel_tool_calls" not in without
    assert "tools" not in without


async def test_parallel_tool_calls_can_be_left_out_for_endpoints_that_reject_it(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("a"))
    client = make_client(server, http, parallel_tool_calls_field=False)

    await collect(client, chat(tools=[READ_FILE]))

    assert "parallel_tool_calls" not in server.requests[0]
    assert server.requests[0]["tools"]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_before_the_answer_and_is_kept_apart_from_it(
    server: FakeModelServer, http: httpx.AsyncClient, key: str
) -> None:
    server.enqueue(reasoning_answer("First, read the file. ", "It prints hi.", key=key))

    events = await collect(make_client(server, http))

    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningText))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert reasoning == "First, read the file. "
    assert text == "It prints hi."
    last_reasoning = max(i for i, e in enumerate(events) if isinstance(e, ReasoningText))
    first_text = min(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert last_reasoning < first_text
    response = final(events)
    assert (response.content, response.reasoning) == ("It prints hi.", "First, read the file. ")


async def test_a_whole_completion_gives_its_reasoning_too(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(reasoning_answer("Think.", "Done."))

    events = await collect(make_client(server, http, stream=False))

    assert events[:2] == [ReasoningText("Think."), TextDelta("Done.")]
    assert final(events).reasoning == "Think."


async def test_the_first_tool_calls_arguments_stream_as_fragments(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    arguments = {"path": "src/main.py", "content": "print('hi')\n" * 3}
    server.enqueue(
        tool_call_answer(
            "write_file", arguments, call_id="call_w", extra_calls=[("read_file", {"path": "x"})]
        )
    )

    events = await collect(make_client(server, http))

    fragments = [e for e in events if isinstance(e, ToolCallFragment)]
    assert fragments  # how the pieces group depends on TCP; what they add up to does not
    assert {(f.call_id, f.tool_name) for f in fragments} == {("call_w", "write_file")}
    assert json.loads("".join(f.arguments for f in fragments)) == arguments
    # Only the first call streams: the runtime drops the others.
    first, second = final(events).tool_calls
    assert (first.call_id, second.tool_name) == ("call_w", "read_file")


async def test_a_call_without_an_id_streams_under_the_id_it_ends_with(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    call = {"index": 0, "function": {"name": "read_file", "arguments": '{"pa'}}
    server.enqueue(
        raw_sse(
            [
                sse(chunk({"tool_calls": [call]})),
                sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a"}'}}]})),
                sse(chunk({}, "tool_calls")),
                sse(usage_chunk(1, 1)),
                sse("[DONE]"),
            ]
        )
    )

    events = await collect(make_client(server, http))

    fragments = [e for e in events if isinstance(e, ToolCallFragment)]
    (requested,) = final(events).tool_calls
    assert requested.call_id.startswith("call_")
    assert {f.call_id for f in fragments} == {requested.call_id}
    assert "".join(f.arguments for f in fragments) == requested.arguments_json == '{"path": "a"}'


async def test_arguments_over_the_limit_stop_streaming(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(tool_call_answer("write_file", {"path": "a", "content": "x" * 200}))

    events = await collect(make_client(server, http, limits=AnswerLimits(tool_arguments=50)))

    streamed = "".join(e.arguments for e in events if isinstance(e, ToolCallFragment))
    assert 0 < len(streamed) <= 50
    (requested,) = final(events).tool_calls
    assert requested.invalid_arguments  # refused, as before: the model reads why


def _with(request: ChatRequest, *, generation: GenerationConfig) -> ChatRequest:
    return dataclasses.replace(request, generation=generation)


async def test_a_fragment_is_yielded_before_the_rest_of_the_call_exists(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    release = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        first = {"index": 0, "id": "c1", "function": {"name": "read_file", "arguments": '{"pa'}}
        rest = {"index": 0, "function": {"arguments": 'th": "a"}'}}
        await out.start_stream()
        await out.send_event(chunk({"tool_calls": [first]}))
        await release.wait()  # written once the client has seen the first fragment
        await out.send_event(chunk({"tool_calls": [rest]}, "tool_calls"))
        await out.send_event("[DONE]")
        await out.end_stream()

    server.enqueue(ScriptedResponse(respond, "gated call"))
    stream = make_client(server, http).stream_chat(chat(tools=[READ_FILE]))

    assert await asyncio.wait_for(anext(stream), 5) == ToolCallFragment("c1", "read_file", '{"pa')
    release.set()
    rest = [event async for event in stream]
    assert [e for e in rest if isinstance(e, ToolCallFragment)] == [
        ToolCallFragment("c1", "read_file", 'th": "a"}')
    ]
