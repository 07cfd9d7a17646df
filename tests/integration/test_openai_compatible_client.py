"""OpenAICompatibleClient against a real HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from agent_runtime import bootstrap
from agent_runtime.application.ports import ChatRequest, LLMClient
from agent_runtime.config import ConfigError, DatabaseSettings, ServerSettings, Settings
from agent_runtime.domain.errors import (
    ModelError,
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.domain.model import Message, Role, ToolCallRecord, Usage
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    RequestedToolCall,
    TextDelta,
)
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition, declared_tool
from agent_runtime.infrastructure.llm.endpoint import ModelEndpoint
from agent_runtime.infrastructure.llm.http_client import (
    HTTP_TRANSPORTS,
    HttpTransport,
    create_http_client,
)
from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
from agent_runtime.infrastructure.llm.resilience import RetryPolicy
from tests.support.certificates import make_certificates
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    drop_connection_after,
    http_error,
    raw_sse,
    text_answer,
    tool_call_answer,
)

API_KEY = "sk-test-0123456789abcdef-SECRET"
# These tests are about what one response becomes; retries are in test_model_endpoint_faults.py.
NO_RETRY = RetryPolicy(max_attempts=1)
NOW = datetime(2025, 1, 1, tzinfo=UTC)
LOOPBACK = "http://127.0.0.1/v1"  # where the shared client's endpoint is (for its proxy)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


@pytest.fixture(params=HTTP_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> HttpTransport:
    """Each test runs on both HTTP transports (AGENT_RUNTIME_LLM_HTTP_TRANSPORT)."""
    transport: HttpTransport = request.param
    return transport


@pytest.fixture
async def http(transport: HttpTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client(
        LOOPBACK, transport=transport, connect_timeout=5.0, read_timeout=10.0
    ) as client:
        yield client


def make_client(
    server: FakeModelServer, http: httpx.AsyncClient, **options: Any
) -> OpenAICompatibleClient:
    options.setdefault("retry", NO_RETRY)
    return OpenAICompatibleClient(
        http, base_url=server.base_url, model="default-model", api_key=API_KEY, **options
    )


def message(position: int, role: Role, content: str, **fields: Any) -> Message:
    return Message(f"m{position}", "s1", position, role, content, NOW, **fields)


def chat(
    text: str = "Hi",
    *,
    history: Sequence[Message] | None = None,
    tools: Sequence[ToolDefinition] = (),
    system_prompt: str = "",
    model: str = "",
) -> ChatRequest:
    return ChatRequest(
        model=model,
        system_prompt=system_prompt,
        history=history if history is not None else [message(1, Role.USER, text)],
        tools=tools,
    )


async def collect(client: LLMClient, request: ChatRequest | None = None) -> list[ModelEvent]:
    return [event async for event in client.stream_chat(request or chat())]


def deltas(events: list[ModelEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


def final(events: list[ModelEvent]) -> ModelResponse:
    # Exactly one ModelResponse, and it comes last.
    assert [type(event) for event in events].count(ModelResponse) == 1
    last = events[-1]
    assert isinstance(last, ModelResponse)
    return last


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "c",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def custom(respond: Any) -> ScriptedResponse:
    return ScriptedResponse(respond, "custom")


# --- streaming answers ----------------------------------------------------------------------


async def test_text_streams_as_deltas_then_one_response_with_usage(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("Hello there, general Kenobi", usage=(11, 4)))

    events = await collect(make_client(server, http))

    # One delta per network read: how the tokens group depends on TCP, the text does not.
    assert "".join(deltas(events)) == "Hello there, general Kenobi"
    assert deltas(events)
    assert final(events) == ModelResponse(
        content="Hello there, general Kenobi",
        tool_calls=(),
        usage=Usage(prompt_tokens=11, completion_tokens=4),
        finish_reason="stop",
    )


async def test_a_delta_is_yielded_before_the_rest_of_the_stream_exists(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    release = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(chunk({"content": "first "}))
        await release.wait()  # the rest is only written once the client has seen "first "
        await out.send_event(chunk({"content": "second"}, "stop"))
        await out.send_event("[DONE]")
        await out.end_stream()

    server.enqueue(custom(respond))
    stream = make_client(server, http).stream_chat(chat())

    assert await asyncio.wait_for(anext(stream), 5) == TextDelta("first ")
    release.set()
    rest = [event async for event in stream]
    assert deltas(rest) == ["second"]
    assert final(rest).content == "first second"


async def test_request_body_and_headers(server: FakeModelServer, http: httpx.AsyncClient) -> None:
    server.enqueue(text_answer("ok"))
    client = make_client(server, http, extra_headers={"X-Org": "acme", "X-Trace": "t-1"})
    history = [
        message(1, Role.USER, "Read main.py"),
        message(
            2,
            Role.ASSISTANT,
            "",
            tool_calls=(ToolCallRecord("call_a", "read_file", {"path": "main.py"}),),
        ),
        message(3, Role.TOOL, "print('hi')", tool_call_id="call_a"),
        message(4, Role.ASSISTANT, "It prints hi."),
        message(5, Role.USER, "Thanks"),
    ]
    read_file = TOOL_CATALOGUE["read_file"]

    await collect(client, chat(history=history, tools=[read_file], system_prompt="Be terse."))

    assert server.requests == [
        {
            "model": "default-model",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Read main.py"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": "main.py"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": "print('hi')"},
                {"role": "assistant", "content": "It prints hi."},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "read_file",
                        "description": read_file.description,
                        "parameters": read_file.parameters,
                    },
                }
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            # One tool at a time: the model is asked for one call.
            "parallel_tool_calls": False,
        }
    ]
    headers = server.headers[0]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-org"] == "acme"
    assert headers["x-trace"] == "t-1"
    assert headers["content-type"] == "application/json"


async def test_an_extra_header_replaces_a_default_one_whatever_its_case(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # A provider with another auth scheme: its header replaces ours, never joins it.
    server.enqueue(text_answer("ok"))
    client = make_client(server, http, extra_headers={"authorization": "Token other-scheme"})

    await collect(client)

    assert server.headers[0]["authorization"] == "Token other-scheme"  # one header, not two


async def test_request_model_overrides_default_and_empty_parts_are_left_out(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("ok"))
    client = OpenAICompatibleClient(http, base_url=server.base_url + "/", model="default-model")

    await collect(client, chat("Hi", model="other-model"))

    body = server.requests[0]
    assert body["model"] == "other-model"
    assert body["messages"] == [{"role": "user", "content": "Hi"}]  # no empty system prompt
    assert "tools" not in body
    assert "authorization" not in server.headers[0]


async def test_every_request_carries_its_own_tools_whole(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # The tools' JSON is encoded once per definition and reused: a later request with other
    # definitions (even one under the same name) must carry those, complete.
    server.enqueue(text_answer("one"), text_answer("two"), text_answer("three"))
    client = make_client(server, http)
    read_file, write_file = TOOL_CATALOGUE["read_file"], TOOL_CATALOGUE["write_file"]
    renamed = ToolDefinition("read_file", "Lire un fichier — «UTF-8» ✓", {"type": "object"})

    for tools in ([read_file, write_file], [write_file], [renamed]):
        await collect(client, chat(tools=tools))

    def wire(tool: ToolDefinition) -> dict[str, Any]:
        function = {"name": tool.name, "description": tool.description}
        return {"type": "function", "function": {**function, "parameters": tool.parameters}}

    assert [body["tools"] for body in server.requests] == [
        [wire(read_file), wire(write_file)],
        [wire(write_file)],
        [wire(renamed)],
    ]
    assert all(body["stream"] is True for body in server.requests)


async def test_a_declared_tool_is_not_kept_once_its_request_is_sent(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # Declared tools are new definitions every turn, MCP-sized (about 60 KB as JSON here):
    # kept after their request, 40 turns would hold over 15 MB.
    properties = {f"p{k}": {"type": "string", "description": "x" * 20} for k in range(900)}
    raw = json.dumps({"type": "object", "properties": properties})
    client = make_client(server, http)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(40):
            server.enqueue(text_answer("ok"))
            tool = declared_tool("ide_tool", "an MCP tool", json.loads(raw))
            await collect(client, chat(tools=[tool]))
            server.requests.clear()  # the server's record of the body, not the client's
        del tool
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < 4 * 2**20, f"{retained / 2**20:.1f} MiB retained after 40 turns"


async def test_tool_call_arguments_over_many_fragments_are_assembled(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    arguments = {"path": "src/main.py", "start_line": 10, "end_line": 20, "encoding": "utf-8"}
    server.enqueue(tool_call_answer("read_file", arguments, call_id="call_xyz"))

    events = await collect(make_client(server, http))

    assert deltas(events) == []
    response = final(events)
    assert response.tool_calls == (
        RequestedToolCall("call_xyz", "read_file", json.dumps(arguments)),
    )
    assert json.loads(response.tool_calls[0].arguments_json) == arguments
    assert response.finish_reason == "tool_calls"
    assert response.content == ""
    assert response.usage == Usage(5, 7)


async def test_two_tool_calls_by_index_after_some_text(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(
        tool_call_answer(
            "read_file",
            {"path": "a.py"},
            content="Let me look.",
            extra_calls=[("list_files", {"path": ".", "recursive": True})],
        )
    )

    events = await collect(make_client(server, http))

    assert "".join(deltas(events)) == "Let me look."
    response = final(events)
    assert response.content == "Let me look."
    assert response.tool_calls == (
        RequestedToolCall("call_1", "read_file", '{"path": "a.py"}'),
        RequestedToolCall("call_1_2", "list_files", '{"path": ".", "recursive": true}'),
    )


async def test_interleaved_tool_call_fragments_are_ordered_by_index_and_get_ids(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    server.enqueue(
        raw_sse(
            [
                sse(call(1, id="call_b", function={"name": "list_files", "arguments": '{"pa'})),
                sse(call(0, function={"name": "read_file", "arguments": ""})),  # no id, ever
                sse(call(1, function={"arguments": 'th": "."}'})),
                sse(call(0, function={"arguments": '{"path": "x"}'})),
                sse(chunk({}, "tool_calls")),
                sse("[DONE]"),
            ]
        )
    )

    response = final(await collect(make_client(server, http)))

    first, second = response.tool_calls
    assert (first.tool_name, first.arguments_json) == ("read_file", '{"path": "x"}')
    assert re.fullmatch(r"call_[0-9a-f]{32}", first.call_id)
    assert second == RequestedToolCall("call_b", "list_files", '{"path": "."}')


async def test_frames_split_mid_line_and_mid_json_across_http_chunks(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # The client reads whatever has arrived, so how the pieces group depends on TCP; every
    # split of the bytes is the SSE parser's unit tests' (tests/unit/test_sse_parser.py).
    stream = (
        b": keep-alive\r\n\r\n"
        + sse(chunk({"role": "assistant", "content": ""})).replace(b"\n", b"\r\n")
        + sse(chunk({"content": "Gr\u00fc\u00dfe "}))
        + sse(chunk({"content": "\u20ac\U0001f600"}))
        + sse(chunk({}, "stop"))
        + sse(usage_chunk(3, 2))
        + sse("[DONE]")
    )
    for size in (1, 3, 7, 64):
        server.enqueue(raw_sse(pieces(stream, size)))

        events = await collect(make_client(server, http))

        assert "".join(deltas(events)) == "Gr\u00fc\u00dfe \u20ac\U0001f600", size
        assert final(events) == ModelResponse(
            "Gr\u00fc\u00dfe \u20ac\U0001f600", (), Usage(3, 2), "stop"
        )


async def test_fake_server_keeps_raw_frames_split_as_given(server: FakeModelServer) -> None:
    # What the test above relies on: each frame is its own HTTP chunk.
    frames = [b"da", b"ta: {", b'"x": 1}\n', b"\n"]
    server.enqueue(raw_sse(frames))

    received: list[bytes] = []
    piece = b""
    # aiohttp says where each HTTP chunk ends.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/chat/completions", json={}) as response,
    ):
        async for data, end_of_http_chunk in response.content.iter_chunks():
            piece += data
            if end_of_http_chunk:
                received.append(piece)
                piece = b""

    assert received == frames


async def test_usage_chunk_with_empty_choices_and_nothing_read_after_done(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(
        raw_sse(
            [
                sse(chunk({"content": "Hi"})),
                sse(chunk({}, "stop")),
                sse(usage_chunk(42, 1)),
                sse("[DONE]"),
                b"data: {this is not json\n\n",  # after [DONE]: must be ignored
            ]
        )
    )

    events = await collect(make_client(server, http))

    assert events == [TextDelta("Hi"), ModelResponse("Hi", (), Usage(42, 1), "stop")]


async def test_stream_without_done_but_with_finish_reason_is_complete(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(raw_sse([sse(chunk({"content": "Hi"})), sse(chunk({}, "length"))]))

    events = await collect(make_client(server, http))

    assert final(events) == ModelResponse("Hi", (), None, "length")


async def test_stream_ending_without_done_or_finish_reason_is_truncated(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(raw_sse([sse(chunk({"content": "Hi"}))]))

    with pytest.raises(ModelUnavailable) as caught:
        await collect(make_client(server, http))

    assert caught.value.reason == "MODEL_STREAM_TRUNCATED"
    assert caught.value.retryable


async def test_server_answering_json_to_a_stream_request_is_understood(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.send_json(
            200,
            {"choices": [{"message": {"content": "Plain"}, "finish_reason": "stop"}]},
        )

    server.enqueue(custom(respond))

    events = await collect(make_client(server, http))

    assert events == [TextDelta("Plain"), ModelResponse("Plain", (), None, "stop")]


# --- failures -------------------------------------------------------------------------------


async def test_http_400_is_rejected_with_the_providers_message(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(
        http_error(
            400,
            '{"error": {"message": "Unknown model: nope", "type": "invalid_request_error"}}',
        )
    )

    with pytest.raises(ModelRequestRejected) as caught:
        await collect(make_client(server, http))

    assert caught.value.reason == "MODEL_HTTP_400"
    assert not caught.value.retryable
    assert "Unknown model: nope" in caught.value.message
    assert "400" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_http_429_and_5xx_are_unavailable_and_retryable(
    server: FakeModelServer, http: httpx.AsyncClient, status: int
) -> None:
    server.enqueue(http_error(status, "upstream " + "x" * 5000, headers={"Retry-After": "7"}))

    with pytest.raises(ModelUnavailable) as caught:
        await collect(make_client(server, http))

    error = caught.value
    assert error.reason == f"MODEL_HTTP_{status}"
    assert error.retryable
    assert "upstream xxx" in error.message
    assert len(error.message) < 700  # only an excerpt of the body
    assert error.metadata["retry_after"] == "7"


async def test_no_scripted_response_is_a_500(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        await collect(make_client(server, http))

    assert caught.value.reason == "MODEL_HTTP_500"
    assert "no scripted response" in caught.value.message


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connecting is refused, and no one else can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused_is_unreachable(http: httpx.AsyncClient, closed_port: int) -> None:
    client = OpenAICompatibleClient(
        http,
        base_url=f"http://127.0.0.1:{closed_port}/v1",
        model="m",
        api_key=API_KEY,
        retry=NO_RETRY,
    )

    with pytest.raises(ModelUnavailable) as caught:
        await collect(client)

    assert caught.value.reason == "MODEL_UNREACHABLE"
    assert caught.value.retryable


async def test_connection_dropped_mid_stream_after_first_deltas(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(drop_connection_after("one two three four", 2))
    received: list[ModelEvent] = []

    with pytest.raises(ModelUnavailable) as caught:
        async for event in make_client(server, http).stream_chat(chat()):
            received.append(event)

    assert "".join(e.text for e in received if isinstance(e, TextDelta)) == "one two "
    assert caught.value.reason == "MODEL_STREAM_INTERRUPTED"
    assert caught.value.retryable


async def test_read_timeout_is_model_timeout(
    server: FakeModelServer, transport: HttpTransport
) -> None:
    never = asyncio.Event()

    async def hang(request: dict[str, Any]) -> None:
        await never.wait()  # cancelled by server.stop()

    server.on_request = hang
    async with create_http_client(server.base_url, transport=transport, read_timeout=0.2) as http:
        with pytest.raises(ModelTimeout) as caught:
            await collect(make_client(server, http))

    assert caught.value.reason == "MODEL_TIMEOUT"  # the read timeout, not the first-token one
    assert caught.value.retryable


async def test_malformed_json_frame_is_a_protocol_error(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(chunk({"content": "Hi"}))
        await seen.wait()  # so the bad frame comes in a read of its own
        await out.send_chunk(b'data: {"choices": [\n\n')
        await out.end_stream()

    server.enqueue(custom(respond))
    received: list[ModelEvent] = []

    with pytest.raises(ModelProtocolError) as caught:
        async for event in make_client(server, http).stream_chat(chat()):
            received.append(event)
            seen.set()

    assert received == [TextDelta("Hi")]
    assert caught.value.reason == "MODEL_BAD_RESPONSE"
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("error", "expected", "reason"),
    [
        ({"message": "overloaded", "type": "server_error"}, ModelUnavailable, "MODEL_STREAM_ERROR"),
        ({"message": "too long", "code": "context_length_exceeded"}, ModelRequestRejected, None),
        ({"message": "bad", "code": 400}, ModelRequestRejected, None),
        ({"message": "slow down", "type": "rate_limit_exceeded"}, ModelUnavailable, None),
        ("plain string error", ModelUnavailable, "MODEL_STREAM_ERROR"),
    ],
)
async def test_error_object_in_the_stream(
    server: FakeModelServer,
    http: httpx.AsyncClient,
    error: object,
    expected: type[ModelError],
    reason: str | None,
) -> None:
    server.enqueue(raw_sse([sse(chunk({"content": "Hi"})), sse({"error": error})]))

    with pytest.raises(expected) as caught:
        await collect(make_client(server, http))

    assert caught.value.retryable == (expected is ModelUnavailable)
    if reason is not None:
        assert caught.value.reason == reason


async def test_closing_the_stream_early_closes_the_http_response(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    disconnected = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(chunk({"content": "first "}))
        await out.wait_for_disconnect()  # no more data will come: only a close ends this
        disconnected.set()

    server.enqueue(custom(respond))
    stream = make_client(server, http).stream_chat(chat())
    assert await anext(stream) == TextDelta("first ")

    await stream.aclose()

    await asyncio.wait_for(disconnected.wait(), 5)


async def test_cancelling_the_consumer_closes_the_http_response(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    disconnected = asyncio.Event()
    first_seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(chunk({"content": "first "}))
        await out.wait_for_disconnect()
        disconnected.set()

    async def consume() -> None:
        async for _event in make_client(server, http).stream_chat(chat()):
            first_seen.set()

    server.enqueue(custom(respond))
    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_seen.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # cancellation is not turned into a domain error

    await asyncio.wait_for(disconnected.wait(), 5)


def secret_echoing_failures() -> list[ScriptedResponse]:
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {API_KEY}"}})
    return [
        http_error(401, echo),
        http_error(500, f"proxy failed; request had Authorization: Bearer {API_KEY}"),
        raw_sse([sse({"error": {"message": f"key {API_KEY} is over quota"}})]),
        raw_sse([f"data: {{{API_KEY}\n\n".encode()]),
    ]


@pytest.mark.parametrize("index", range(len(secret_echoing_failures())))
async def test_api_key_never_appears_in_an_error(
    server: FakeModelServer, http: httpx.AsyncClient, index: int
) -> None:
    server.enqueue(secret_echoing_failures()[index])

    with pytest.raises(ModelError) as caught:
        await collect(make_client(server, http))

    assert API_KEY not in str(caught.value)
    assert API_KEY not in caught.value.message
    assert "[REDACTED]" in caught.value.message


async def test_api_key_not_in_unreachable_error(http: httpx.AsyncClient, closed_port: int) -> None:
    client = OpenAICompatibleClient(
        http,
        base_url=f"http://127.0.0.1:{closed_port}/v1",
        model="m",
        api_key=API_KEY,
        retry=NO_RETRY,
    )

    with pytest.raises(ModelUnavailable) as caught:
        await collect(client)

    assert API_KEY not in str(caught.value)


# --- non-streaming mode ---------------------------------------------------------------------


async def test_non_streaming_text(server: FakeModelServer, http: httpx.AsyncClient) -> None:
    server.enqueue(text_answer("Hello there", usage=(9, 2)))

    events = await collect(make_client(server, http, stream=False))

    assert events == [
        TextDelta("Hello there"),
        ModelResponse("Hello there", (), Usage(9, 2), "stop"),
    ]
    body = server.requests[0]
    assert body["stream"] is False
    assert "stream_options" not in body


async def test_non_streaming_tool_calls(server: FakeModelServer, http: httpx.AsyncClient) -> None:
    server.enqueue(
        tool_call_answer(
            "read_file", {"path": "a.py"}, extra_calls=[("delete_file", {"path": "b.py"})]
        )
    )

    events = await collect(make_client(server, http, stream=False))

    assert events == [
        ModelResponse(
            "",
            (
                RequestedToolCall("call_1", "read_file", '{"path": "a.py"}'),
                RequestedToolCall("call_1_2", "delete_file", '{"path": "b.py"}'),
            ),
            Usage(5, 7),
            "tool_calls",
        )
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"id": "x", "choices": []}',
        b'{"id": "x"}',
        b"[1, 2]",
        b'{"choices": [{"index": 0, "finish_reason": "stop"}]}',
    ],
)
async def test_non_streaming_malformed_answer_is_a_protocol_error(
    server: FakeModelServer, http: httpx.AsyncClient, body: bytes
) -> None:
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.send_body(200, body)

    server.enqueue(custom(respond))

    with pytest.raises(ModelProtocolError):
        await collect(make_client(server, http, stream=False))


async def test_connection_is_reused_across_requests(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # After [DONE] the rest of the body is read, so the connection goes back to the pool.
    server.enqueue(text_answer("one"), text_answer("two"), text_answer("three"))
    client = make_client(server, http)

    for expected in ("one", "two", "three"):
        assert final(await collect(client)).content == expected

    assert server.connections_opened == 1


async def test_fake_server_stops_with_a_stream_still_open(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(chunk({"content": "first "}))
        await asyncio.Event().wait()  # never finishes on its own

    server.enqueue(custom(respond))
    stream = make_client(server, http).stream_chat(chat())
    assert await anext(stream) == TextDelta("first ")

    await asyncio.wait_for(server.stop(), 5)

    with pytest.raises(ModelUnavailable) as caught:
        await anext(stream)
    assert caught.value.reason == "MODEL_STREAM_INTERRUPTED"
    assert server.errors == []


async def test_tokens_that_arrive_together_leave_as_one_delta(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    def frame(text: str) -> bytes:
        payload = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        return f"data: {json.dumps(payload)}\n\n".encode()

    done = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_chunk(frame("a") + frame("b") + frame("c"))
        await seen.wait()  # the rest arrives apart from the first three
        await out.send_chunk(frame("d") + done)
        await out.send_chunk(b"data: [DONE]\n\n")
        await out.end_stream()

    server.enqueue(custom(respond))
    events: list[ModelEvent] = []
    async for event in make_client(server, http).stream_chat(chat()):
        events.append(event)
        seen.set()
    assert deltas(events) == ["abc", "d"]
    assert final(events).content == "abcd"


# --- the HTTP client: encoding, connections, proxies, TLS -----------------------------------


async def test_a_gzip_compressed_stream_is_decoded_as_it_arrives(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        gzip = zlib.compressobj(wbits=31)  # the gzip format

        async def send(data: bytes) -> None:
            # Each event flushed whole, as a compressing proxy streaming SSE must.
            await out.send_chunk(gzip.compress(data) + gzip.flush(zlib.Z_SYNC_FLUSH))

        await out.start_stream(headers={"Content-Encoding": "gzip"})
        await send(sse(chunk({"content": "Hello "})))
        await seen.wait()  # the first delta must not wait for the rest of the body
        await send(sse(chunk({"content": "gzip"}, "stop")) + sse("[DONE]"))
        await out.send_chunk(gzip.flush())
        await out.end_stream()

    server.enqueue(custom(respond))
    events: list[ModelEvent] = []
    async for event in make_client(server, http).stream_chat(chat()):
        events.append(event)
        seen.set()

    assert deltas(events) == ["Hello ", "gzip"]
    assert final(events).content == "Hello gzip"
    assert "gzip" in server.headers[0]["accept-encoding"]


async def test_the_connection_is_reused_when_the_body_ends_after_done(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # The end of the chunked body comes in a read after [DONE]: the client reads it (up to
    # a bound) so the connection can serve the next request.
    seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_chunk(sse(chunk({"content": "one"}, "stop")) + sse("[DONE]"))
        await seen.wait()
        await out.end_stream()

    server.enqueue(custom(respond), text_answer("two"))
    client = make_client(server, http)
    first: list[ModelEvent] = []
    async for event in client.stream_chat(chat()):
        first.append(event)
        seen.set()

    assert final(first).content == "one"
    assert final(await collect(client)).content == "two"
    assert server.connections_opened == 1


async def test_a_redirect_is_not_followed(server: FakeModelServer, http: httpx.AsyncClient) -> None:
    # Following it would send the API key to wherever the Location points.
    async with FakeModelServer() as elsewhere:
        elsewhere.default_response = text_answer("must not be asked for")
        location = f"{elsewhere.base_url}/chat/completions"
        server.enqueue(http_error(307, "moved", headers={"Location": location}))

        with pytest.raises(ModelRequestRejected) as caught:
            await collect(make_client(server, http))

        assert caught.value.reason == "MODEL_HTTP_307"
        assert elsewhere.requests == []


async def test_a_cookie_the_endpoint_sets_is_sent_back(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # As httpx's own client does (a load balancer's sticky-session cookie). The canary of
    # ModelHttpClient, which hands the jar only the responses that set a cookie: should httpx
    # stop reading its jar through the `cookies` property, this cookie would not come back.
    async def sets_a_cookie(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream(headers={"Set-Cookie": "lb=node-7; Path=/"})
        await out.send_event(chunk({"content": "one"}, finish_reason="stop"))
        await out.send_event("[DONE]")
        await out.end_stream()

    server.enqueue(custom(sets_a_cookie), text_answer("two"), text_answer("three"))
    client = make_client(server, http)

    for expected in ("one", "two", "three"):
        assert final(await collect(client)).content == expected

    assert "cookie" not in server.headers[0]
    # The second response set none: the jar kept what the first set.
    assert [headers.get("cookie") for headers in server.headers[1:]] == ["lb=node-7"] * 2
    assert http.cookies.get("lb") == "node-7"


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
async def test_a_proxy_named_by_the_environment_is_used(
    server: FakeModelServer,
    transport: HttpTransport,
    no_proxy_variables: pytest.MonkeyPatch,
    variable: str,
) -> None:
    # The fake server plays the proxy: a plain-HTTP request through a proxy is sent to it
    # whole ("POST http://host/v1/chat/completions"), and it answers as the model would.
    proxy = server.base_url.removesuffix("/v1").replace("://", "://user:pass@")
    no_proxy_variables.setenv(variable, proxy)
    server.enqueue(text_answer("proxied"))
    model_url = "http://model.invalid/v1"
    async with create_http_client(model_url, transport=transport) as http:
        client = OpenAICompatibleClient(
            http, base_url=model_url, model="m", api_key=API_KEY, retry=NO_RETRY
        )

        assert final(await collect(client)).content == "proxied"
    assert server.targets == ["http://model.invalid/v1/chat/completions"]
    assert server.headers[0]["proxy-authorization"] == "Basic dXNlcjpwYXNz"  # user:pass
    assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"


async def test_no_proxy_exempts_a_host(
    server: FakeModelServer,
    transport: HttpTransport,
    no_proxy_variables: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    no_proxy_variables.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    no_proxy_variables.setenv("NO_PROXY", "localhost,127.0.0.1")
    server.enqueue(text_answer("direct"))

    async with create_http_client(server.base_url, transport=transport) as http:
        assert final(await collect(make_client(server, http))).content == "direct"
    assert server.targets == ["/v1/chat/completions"]


def test_a_proxy_that_is_not_http_is_refused_naming_it_without_its_credentials(
    no_proxy_variables: pytest.MonkeyPatch,
) -> None:
    # aiohttp would speak HTTP to a SOCKS proxy: every call would fail, and not say why.
    no_proxy_variables.setenv("ALL_PROXY", "socks5://user:secret@127.0.0.1:1080")
    with pytest.raises(ValueError, match=re.escape("socks5://127.0.0.1:1080")) as refused:
        create_http_client("http://model.invalid/v1")
    assert "secret" not in str(refused.value)


async def test_start_up_stops_at_such_a_proxy_before_touching_the_database(
    tmp_path: Path, no_proxy_variables: pytest.MonkeyPatch
) -> None:
    no_proxy_variables.setenv("HTTPS_PROXY", "socks5h://127.0.0.1:1080")
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'runtime.db'}"),
        model=ModelEndpoint(base_url="https://model.invalid/v1"),
    )
    with pytest.raises(ConfigError, match="not an HTTP proxy"):
        await bootstrap.start(settings)
    assert not (tmp_path / "runtime.db").exists()


async def test_tls_is_verified_against_the_systems_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: HttpTransport
) -> None:
    ours, theirs = make_certificates(tmp_path / "ours"), make_certificates(tmp_path / "theirs")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ours.server_cert, ours.server_key)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with FakeModelServer(tls=tls) as server:
        server.default_response = text_answer("secure")
        # SSL_CERT_FILE replaces the system's bundle (OpenSSL reads it): first one that
        # does not hold the server's CA, then one that does.
        monkeypatch.setenv("SSL_CERT_FILE", str(theirs.ca))
        async with create_http_client(server.base_url, transport=transport) as http:
            with pytest.raises(ModelUnavailable) as caught:
                await collect(make_client(server, http))
        monkeypatch.setenv("SSL_CERT_FILE", str(ours.ca))
        async with create_http_client(server.base_url, transport=transport) as http:
            events = await collect(make_client(server, http))

    assert caught.value.reason == "MODEL_UNREACHABLE"
    assert "certificate" in caught.value.message
    assert final(events).content == "secure"
    assert len(server.requests) == 1  # the untrusted server was never sent the request


class HeldStreams:
    """Answers that stream their first word, then wait for the test to release them."""

    def __init__(self) -> None:
        self.started: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]
        self.release: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]
        self._count = 0

    async def respond(self, request: RequestBody, out: ResponseWriter) -> None:
        number, self._count = self._count, self._count + 1
        await out.start_stream()
        await out.send_event(chunk({"content": f"s{number} "}))
        self.started[number].set()
        await self.release[number].wait()
        await out.send_event(chunk({"content": "end"}, "stop"))
        await out.send_event("[DONE]")
        await out.end_stream()


async def test_max_connections_bounds_the_model_streams_open_at_once(
    server: FakeModelServer, transport: HttpTransport
) -> None:
    held = HeldStreams()
    server.default_response = custom(held.respond)
    async with create_http_client(
        server.base_url, transport=transport, max_connections=2, connect_timeout=5.0
    ) as http:
        client = make_client(server, http)
        calls = [asyncio.create_task(collect(client)) for _ in range(3)]
        async with asyncio.timeout(5):
            await held.started[0].wait()
            await held.started[1].wait()
            held.release[0].set()  # the third request gets the connection this one frees
            await held.started[2].wait()
        held.release[1].set()
        held.release[2].set()
        answers = [final(events).content for events in await asyncio.gather(*calls)]

    assert sorted(answers) == ["s0 end", "s1 end", "s2 end"]
    assert server.connections_opened == 2


async def test_waiting_longer_than_the_connect_timeout_for_a_connection_fails(
    server: FakeModelServer, transport: HttpTransport
) -> None:
    held = HeldStreams()
    server.default_response = custom(held.respond)
    async with create_http_client(
        server.base_url, transport=transport, max_connections=1, connect_timeout=0.3
    ) as http:
        client = make_client(server, http)
        first = client.stream_chat(chat())
        assert await anext(first) == TextDelta("s0 ")

        with pytest.raises(ModelUnavailable) as caught:
            await collect(client)  # waits for the one connection, which stays busy

        held.release[0].set()
        assert deltas([event async for event in first]) == ["end"]

    assert caught.value.reason == "MODEL_UNREACHABLE"
    assert caught.value.retryable
    assert len(server.requests) == 1


async def test_a_body_that_does_not_decompress_is_a_protocol_error(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream(headers={"Content-Encoding": "gzip"})
        await out.send_chunk(b"data: this is not gzip\n\n")
        await out.end_stream()

    server.enqueue(custom(respond))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http))

    assert "undecodable" in caught.value.message
    assert not caught.value.retryable


async def test_every_way_an_answer_ends_gives_its_connection_back(
    server: FakeModelServer, transport: HttpTransport
) -> None:
    # With one connection, a request that kept it would leave the next waiting in vain.
    server.enqueue(
        text_answer("closed early by the consumer"),
        http_error(503),
        drop_connection_after("cut off", 1),
        text_answer("still served"),
    )
    async with create_http_client(
        server.base_url, transport=transport, max_connections=1, connect_timeout=2.0
    ) as http:
        client = make_client(server, http)
        stream = client.stream_chat(chat())
        assert isinstance(await anext(stream), TextDelta)
        await stream.aclose()
        for _ in range(2):
            with pytest.raises(ModelUnavailable):
                await collect(client)

        assert final(await collect(client)).content == "still served"

    assert len(server.requests) == 4


@pytest.mark.parametrize("base_url", ["ftp://127.0.0.1/v1", "http://[::1/v1", "http://:80/v1"])
async def test_an_unusable_base_url_is_rejected_not_retried(
    http: httpx.AsyncClient, base_url: str
) -> None:
    client = OpenAICompatibleClient(
        http, base_url=base_url, model="m", retry=RetryPolicy(max_attempts=3, base_delay=0.0)
    )

    with pytest.raises(ModelRequestRejected) as caught:
        await collect(client)

    assert caught.value.reason == "MODEL_BAD_URL"
    assert not caught.value.retryable
