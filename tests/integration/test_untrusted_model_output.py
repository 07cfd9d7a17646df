"""Model output is untrusted input: what a misbehaving endpoint's answer becomes in the client.

Every answer here comes over HTTP from a real server, through OpenAICompatibleClient, on
both HTTP transports. What reaches the turn must be storable and readable back: well-formed
Unicode, bounded in size, tool arguments of bounded depth, plausible token counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import ModelProtocolError, ModelRequestRejected
from agent_runtime.domain.model import Message, Role, Usage
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.infrastructure.llm.http_client import HTTP_TRANSPORTS, create_http_client
from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
from agent_runtime.infrastructure.llm.resilience import RetryPolicy
from agent_runtime.infrastructure.llm.untrusted_output import MAX_ARGUMENT_DEPTH, AnswerLimits
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    raw_sse,
    text_answer,
)

GRIN = "\U0001f600"
WITHIN = 10.0  # seconds: a bound on a whole answer, so a broken client fails, not hangs
REQUEST = ChatRequest(
    "", "", [Message("m1", "s1", 1, Role.USER, "Hi", datetime(2025, 1, 1, tzinfo=UTC))], ()
)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture(params=HTTP_TRANSPORTS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client("http://127.0.0.1/v1", transport=request.param) as client:
        yield client


def make_client(
    server: FakeModelServer, http: httpx.AsyncClient, **options: Any
) -> OpenAICompatibleClient:
    # Three attempts: an answer that is not retried must show it.
    options.setdefault("retry", RetryPolicy(max_attempts=3, base_delay=0.0))
    return OpenAICompatibleClient(http, base_url=server.base_url, model="m", **options)


async def collect(
    client: OpenAICompatibleClient,
    received: list[ModelEvent],
    on_event: Callable[[], None] = lambda: None,
) -> None:
    """Collects events into `received` (so they survive an exception), calling on_event
    after each."""
    async with asyncio.timeout(WITHIN):
        async for item in client.stream_chat(REQUEST):
            received.append(item)
            on_event()


def final(events: list[ModelEvent]) -> ModelResponse:
    assert isinstance(events[-1], ModelResponse)
    return events[-1]


def deltas(events: list[ModelEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


def event(delta: dict[str, Any], finish_reason: str | None = None, **fields: Any) -> bytes:
    """One SSE frame. json.dumps writes a lone surrogate as a \\udXXX escape, as a model
    endpoint's JSON encoder does."""
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return f"data: {json.dumps({**payload, **fields})}\n\n".encode()


def tool_call(arguments: str | dict[str, Any], name: str = "read_file") -> bytes:
    call = {"index": 0, "id": "call_1", "function": {"name": name, "arguments": arguments}}
    return event({"tool_calls": [call]})


DONE = b"data: [DONE]\n\n"


def storable(response: ModelResponse) -> None:
    """What the store and protobuf need of an answer: UTF-8-encodable text everywhere, and
    arguments that parse."""
    response.content.encode("utf-8")
    for call in response.tool_calls:
        for text in (call.call_id, call.tool_name, call.arguments_json, call.invalid_arguments):
            text.encode("utf-8")
        if not call.invalid_arguments:
            json.dumps(json.loads(call.arguments_json), ensure_ascii=False).encode("utf-8")


# --- lone surrogates (issue 18, item 1) -------------------------------------------------------


async def test_a_lone_surrogate_in_the_text_becomes_the_replacement_character(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(raw_sse([event({"content": "a\ud800b"}), event({}, "stop"), DONE]))
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    assert "".join(deltas(received)) == "a\ufffdb"
    assert final(received).content == "a\ufffdb"
    storable(final(received))


async def test_an_event_only_json_accepts_is_read_as_json_reads_it(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # Events are parsed with orjson, and with json where orjson refuses: NaN (some servers
    # send it in logprobs) and huge numbers, which json reads, still do not end the answer.
    server.enqueue(
        raw_sse(
            [
                b'data: {"choices": [{"delta": {"content": "a"}, "logprobs": NaN}]}\n\n',
                b'data: {"choices": [{"delta": {"content": "b"}}], "x": 1e999}\n\n',
                event({}, "stop"),
                DONE,
            ]
        )
    )
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    assert final(received).content == "ab"


async def test_an_emoji_split_across_two_events_is_joined(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    high, low = "\ud83d", "\ude00"
    seen = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_chunk(event({"content": f"x{high}"}))
        await seen.wait()  # the second half comes in a read of its own
        await out.send_chunk(event({"content": f"{low}y"}, "stop") + DONE)
        await out.end_stream()

    server.enqueue(ScriptedResponse(respond))
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received, seen.set)

    assert deltas(received) == ["x", f"{GRIN}y"]  # every delta encodable on its own
    assert final(received).content == f"x{GRIN}y"


async def test_a_high_surrogate_at_the_end_of_the_answer_is_replaced(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(raw_sse([event({"content": "end\ud83d"}, "stop"), DONE]))
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    assert "".join(deltas(received)) == "end\ufffd"
    assert final(received).content == "end\ufffd"


@pytest.mark.parametrize(
    "arguments",
    [
        {"path": "a\ud800"},  # sent as an object: the surrogate escaped in the event
        json.dumps({"path": "a\ud800"}),  # in the arguments' own JSON, escaped there
        '{"path": "a\ud800"}',  # raw in the arguments string, escaped by the event's JSON
    ],
    ids=["object", "escaped-in-arguments", "raw-in-arguments"],
)
async def test_lone_surrogates_in_tool_calls_are_replaced(
    server: FakeModelServer, http: httpx.AsyncClient, arguments: str | dict[str, Any]
) -> None:
    server.enqueue(
        raw_sse([tool_call(arguments, name="read_\udc00file"), event({}, "tool_calls"), DONE])
    )
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    [call] = final(received).tool_calls
    assert call.tool_name == "read_\ufffdfile"
    assert json.loads(call.arguments_json) == {"path": "a\ufffd"}
    storable(final(received))


async def test_a_lone_surrogate_in_an_error_message_is_replaced(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(raw_sse([b'data: {"error": {"message": "bad \\ud800", "code": 400}}\n\n']))

    with pytest.raises(ModelRequestRejected) as caught:
        await collect(make_client(server, http), [])

    assert "bad \ufffd" in caught.value.message
    caught.value.message.encode("utf-8")


# --- tool-call arguments: depth and size (item 2, item 4) ------------------------------------


def nested(depth: int) -> str:
    return '{"a": ' * depth + '"leaf"' + "}" * depth


@pytest.mark.parametrize("depth", [50, 5000])
async def test_arguments_nested_too_deep_are_refused_for_the_model_to_retry(
    server: FakeModelServer, http: httpx.AsyncClient, depth: int
) -> None:
    # 50: past protobuf's decode depth, it made ListMessages fail; 5000: past Python's
    # recursion limit, json.loads raised RecursionError (an INTERNAL error chunk).
    server.enqueue(raw_sse([tool_call(nested(depth)), event({}, "tool_calls"), DONE]))
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    [call] = final(received).tool_calls
    assert call.arguments_json == ""
    assert call.invalid_arguments == (
        f"the arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
    )
    assert len(server.requests) == 1


async def test_arguments_at_the_depth_limit_are_kept(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    arguments = nested(MAX_ARGUMENT_DEPTH)
    server.enqueue(raw_sse([tool_call(arguments), event({}, "tool_calls"), DONE]))
    received: list[ModelEvent] = []

    await collect(make_client(server, http), received)

    [call] = final(received).tool_calls
    assert (call.arguments_json, call.invalid_arguments) == (arguments, "")


async def test_an_event_nested_too_deep_to_parse_is_a_bad_response(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # Arguments sent as an object 5000 deep: the event itself cannot be parsed.
    frame = b'data: {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": '
    frame += b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}}]}}]}\n\n"
    server.enqueue(raw_sse([frame, DONE]))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http), [])

    assert caught.value.reason == "MODEL_BAD_RESPONSE"
    assert "nested too deeply" in caught.value.message
    assert len(server.requests) == 1


async def test_arguments_over_their_limit_are_refused_for_the_model_to_retry(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    content = json.dumps({"path": "big.txt", "content": "x" * 3000})
    fragments = [content[i : i + 100] for i in range(0, len(content), 100)]
    frames = [tool_call(fragments[0], name="write_file")]
    frames += [
        event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for piece in fragments[1:]
    ]
    server.enqueue(raw_sse([*frames, event({}, "tool_calls"), DONE]))
    received: list[ModelEvent] = []

    await collect(make_client(server, http, limits=AnswerLimits(tool_arguments=1000)), received)

    [call] = final(received).tool_calls
    assert call.arguments_json == ""
    assert call.invalid_arguments == (
        f"the arguments are {len(content)} bytes, over the 1000-byte limit"
    )


# --- answer and event size (item 4) -----------------------------------------------------------


async def test_an_answer_over_its_limit_fails_after_the_deltas_already_out(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # The default limit, 1 MiB, with 20 MB on the way: once past it the call fails.
    piece = "y" * 65536
    first_out = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_chunk(event({"content": piece}))
        await first_out.wait()
        for _ in range(320):
            try:
                await out.send_chunk(event({"content": piece}))
            except ConnectionError:
                return

    server.enqueue(ScriptedResponse(respond))
    received: list[ModelEvent] = []

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http), received, first_out.set)

    assert caught.value.reason == "MODEL_ANSWER_TOO_LARGE"
    assert not caught.value.retryable
    assert "1048576-byte limit (AGENT_RUNTIME_MAX_ANSWER_BYTES)" in caught.value.message
    out = "".join(deltas(received))
    assert out.startswith(piece) and len(out) <= 1024 * 1024  # what came before the limit
    assert not any(isinstance(item, ModelResponse) for item in received)
    assert len(server.requests) == 1


async def test_tool_calls_count_towards_the_answer_limit(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    arguments = json.dumps({"path": "a", "content": "z" * 5000})
    server.enqueue(raw_sse([tool_call(arguments), event({}, "tool_calls"), DONE]))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http, limits=AnswerLimits(answer=4000)), [])

    assert caught.value.reason == "MODEL_ANSWER_TOO_LARGE"


async def test_a_line_that_never_ends_fails_at_the_event_limit(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # Before, the SSE parser buffered it all (one turn added ~190 MB).
    disconnected = asyncio.Event()

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_chunk(b'data: {"choices": [{"delta": {"content": "')
        for _ in range(2000):  # 128 MB, unless the client stops reading
            try:
                await out.send_chunk(b"x" * 65536)
            except ConnectionError:
                break
        else:
            return
        disconnected.set()

    server.enqueue(ScriptedResponse(respond))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http, limits=AnswerLimits(event=256 * 1024)), [])

    assert caught.value.reason == "MODEL_ANSWER_TOO_LARGE"
    assert "262144-byte limit (AGENT_RUNTIME_LLM_MAX_EVENT_BYTES)" in caught.value.message
    await asyncio.wait_for(disconnected.wait(), WITHIN)  # the client hung up, not the server
    assert len(server.requests) == 1


async def test_a_whole_completion_over_the_event_limit_fails(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    server.enqueue(text_answer("w" * 300_000))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(
            make_client(server, http, stream=False, limits=AnswerLimits(event=256 * 1024)), []
        )

    assert caught.value.reason == "MODEL_ANSWER_TOO_LARGE"
    assert len(server.requests) == 1


# --- usage (item 3) ---------------------------------------------------------------------------


async def test_implausible_token_counts_are_ignored_with_a_warning(
    server: FakeModelServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    usage = {"prompt_tokens": -5, "completion_tokens": 2**32 + 1}
    server.enqueue(raw_sse([event({"content": "ok"}, "stop", usage=usage), DONE]))
    received: list[ModelEvent] = []

    with caplog.at_level(logging.WARNING):
        await collect(make_client(server, http), received)

    assert final(received).usage == Usage(prompt_tokens=0, completion_tokens=0)
    assert "prompt_tokens = -5" in caplog.text
    assert f"completion_tokens = {2**32 + 1}" in caplog.text


# --- a body that is no answer (item 5) --------------------------------------------------------


async def test_an_html_page_with_200_is_a_bad_response_and_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        page = b"<html><body><h1>Sign in to the corporate proxy</h1></body></html>"
        await out.send_body(200, page, content_type="text/html; charset=utf-8")

    server.default_response = ScriptedResponse(respond)

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http), [])

    assert caught.value.reason == "MODEL_BAD_RESPONSE"
    assert not caught.value.retryable
    assert "text/html" in caught.value.message
    assert "Sign in to the corporate proxy" in caught.value.message
    assert len(server.requests) == 1


async def test_an_answer_with_too_many_tool_calls_is_a_bad_response(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    # Empty fragments cost nothing in size, but each would be a call held until the end.
    fragments = [{"index": index} for index in range(1000)]
    server.enqueue(raw_sse([event({"tool_calls": fragments}), event({}, "tool_calls"), DONE]))

    with pytest.raises(ModelProtocolError) as caught:
        await collect(make_client(server, http), [])

    assert caught.value.reason == "MODEL_BAD_RESPONSE"
    assert "more than 128 tool calls" in caught.value.message
