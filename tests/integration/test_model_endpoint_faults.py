"""Retries, backoff and timeouts of OpenAICompatibleClient against a real HTTP server.

Delays are observed through an injected sleep, never waited; stalled responses are released
by the client closing the connection, which the server observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import (
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.infrastructure.llm.http_client import HTTP_TRANSPORTS, create_http_client
from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
from agent_runtime.infrastructure.llm.resilience import (
    ModelTimeouts,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
)
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    drop_connection_after,
    hang_until_disconnect,
    http_error,
    raw_sse,
    stall_after,
    stepped_answer,
    text_answer,
)

API_KEY = "sk-test-fault-0123456789-SECRET"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
LOGGER = "agent_runtime.infrastructure.llm.openai_compatible"
SHORT = 0.2  # seconds: the timeouts under test
WITHIN = 5.0  # seconds: a bound on the whole test, so a broken client fails instead of hanging


class RecordingSleep:
    """Stands in for asyncio.sleep: records the delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class Counter:
    """Counts calls; `reach(n)` waits (bounded) until there were n of them."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(WITHIN):
            while self.count < n:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake
    assert fake.errors == []  # no responder failed in an unexpected way


@pytest.fixture(params=HTTP_TRANSPORTS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """On each HTTP transport (AGENT_RUNTIME_LLM_HTTP_TRANSPORT)."""
    # A long read timeout: the client's own first-token and idle timeouts must act first.
    async with create_http_client(
        "http://127.0.0.1/v1", transport=request.param, connect_timeout=5.0, read_timeout=30.0
    ) as client:
        yield client


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connecting is refused, and no one else can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def make_client(
    base_url: str, http: httpx.AsyncClient, sleep: RecordingSleep, **options: Any
) -> OpenAICompatibleClient:
    options.setdefault("random", lambda: 0.5)  # the middle of the jitter range: no jitter
    return OpenAICompatibleClient(
        http, base_url=base_url, model="m", api_key=API_KEY, sleep=sleep, **options
    )


def chat() -> ChatRequest:
    history = [Message("m1", "s1", 1, Role.USER, "Hi", NOW)]
    return ChatRequest(model="", system_prompt="", history=history, tools=())


async def consume(client: OpenAICompatibleClient, received: list[ModelEvent]) -> None:
    """Collects events into `received` (so they survive an exception), bounded in time."""
    async with asyncio.timeout(WITHIN):
        async for event in client.stream_chat(chat()):
            received.append(event)


def deltas(events: list[ModelEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


def count_requests(http: httpx.AsyncClient) -> list[httpx.Request]:
    """Every request the client starts, including those that never reach a server."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    http.event_hooks["request"].append(record)
    return sent


# --- what is retried, and how long it waits ------------------------------------------------


async def test_refused_connection_is_retried_then_fails_unreachable(
    http: httpx.AsyncClient, sleep: RecordingSleep, closed_port: int
) -> None:
    sent = count_requests(http)
    client = make_client(f"http://127.0.0.1:{closed_port}/v1", http, sleep)

    with pytest.raises(ModelUnavailable) as caught:
        await consume(client, [])

    assert caught.value.reason == "MODEL_UNREACHABLE"
    assert caught.value.retryable
    assert len(sent) == 3
    assert sleep.delays == [0.5, 1.0]


async def test_http_500_then_success_gives_one_clean_answer(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(http_error(500), text_answer("Hello there"))
    received: list[ModelEvent] = []

    await consume(make_client(server.base_url, http, sleep), received)

    assert "".join(deltas(received)) == "Hello there"
    assert isinstance(received[-1], ModelResponse)
    assert received[-1].content == "Hello there"
    assert len(server.requests) == 2
    assert sleep.delays == [0.5]


async def test_retry_after_seconds_is_waited_instead_of_the_backoff(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(http_error(429, headers={"Retry-After": "2"}), text_answer("ok"))
    received: list[ModelEvent] = []

    await consume(make_client(server.base_url, http, sleep), received)

    assert sleep.delays == [2.0]
    assert deltas(received) == ["ok"]
    assert len(server.requests) == 2


async def test_retry_after_http_date_is_honoured(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=12), usegmt=True)
    server.enqueue(http_error(503, headers={"Retry-After": when}), text_answer("ok"))

    await consume(make_client(server.base_url, http, sleep), [])

    [delay] = sleep.delays
    assert 10.0 < delay <= 12.0  # the date has whole seconds; a little time has passed


async def test_retry_after_over_the_cap_fails_at_once(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(http_error(429, headers={"Retry-After": "120"}))
    server.default_response = text_answer("must not be asked for")
    client = make_client(
        server.base_url, http, sleep, retry=RetryPolicy(max_attempts=5, max_retry_after=30.0)
    )

    with pytest.raises(ModelUnavailable) as caught:
        await consume(client, [])

    assert caught.value.reason == "MODEL_HTTP_429"
    assert caught.value.retryable
    assert caught.value.metadata["retry_after"] == "120"
    assert sleep.delays == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_other_than_429_are_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep, status: int
) -> None:
    server.enqueue(http_error(status, '{"error": {"message": "bad request"}}'))
    server.default_response = text_answer("must not be asked for")

    with pytest.raises(ModelRequestRejected) as caught:
        await consume(make_client(server.base_url, http, sleep), [])

    assert caught.value.reason == f"MODEL_HTTP_{status}"
    assert not caught.value.retryable
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_all_attempts_failing_raises_the_last_error(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(http_error(500), http_error(502), http_error(503))

    with pytest.raises(ModelUnavailable) as caught:
        await consume(make_client(server.base_url, http, sleep), [])

    assert caught.value.reason == "MODEL_HTTP_503"
    assert caught.value.retryable
    assert len(server.requests) == 3


async def test_backoff_grows_exponentially_and_is_capped(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.default_response = http_error(503)
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=3.0, jitter=0.2)
    draws = iter([0.0, 0.75, 0.25, 0.5, 0.999])

    with pytest.raises(ModelUnavailable):
        await consume(
            make_client(server.base_url, http, sleep, retry=policy, random=lambda: next(draws)),
            [],
        )

    # 0.5, 1, 2, 3 (capped), 3 (capped), each +-20% by the random draw
    assert sleep.delays == pytest.approx([0.4, 1.1, 1.8, 3.0, 3.0 * 1.1996])
    assert len(server.requests) == 6


async def test_connection_dropped_before_the_first_token_is_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(drop_connection_after("lost", 0), text_answer("second try"))
    received: list[ModelEvent] = []

    await consume(make_client(server.base_url, http, sleep), received)

    assert "".join(deltas(received)) == "second try"
    assert len(server.requests) == 2
    assert sleep.delays == [0.5]


async def test_an_answer_that_is_not_http_is_an_interrupted_stream_and_retried(
    http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    # E.g. the base URL names another service's port: its greeting is no HTTP status line.
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    sent = count_requests(http)
    endpoint = await asyncio.start_server(not_http, "127.0.0.1", 0)
    async with endpoint:
        port = endpoint.sockets[0].getsockname()[1]
        with pytest.raises(ModelUnavailable) as caught:
            await consume(make_client(f"http://127.0.0.1:{port}/v1", http, sleep), [])

    assert caught.value.reason == "MODEL_STREAM_INTERRUPTED"
    assert caught.value.retryable
    assert len(sent) == 3
    assert sleep.delays == [0.5, 1.0]


# --- after the first token nothing is retried -----------------------------------------------


async def test_connection_cut_mid_stream_is_interrupted_and_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(drop_connection_after("one two three", 1))
    server.default_response = text_answer("a second answer")
    received: list[ModelEvent] = []

    with pytest.raises(ModelUnavailable) as caught:
        await consume(make_client(server.base_url, http, sleep), received)

    assert received == [TextDelta("one ")]
    assert caught.value.reason == "MODEL_STREAM_INTERRUPTED"
    assert caught.value.retryable  # the client may send the turn again
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_a_read_waiting_when_the_chunked_framing_breaks_fails_at_once(
    http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    # aiohttp's C parser drops a body whose framing broke and closes the connection without
    # failing the body's reader: a read already waiting then ended only at the idle deadline
    # (here far beyond WITHIN), as a timeout. It must fail once the connection is lost (as
    # it does on httpx's own transport).
    first_delta = asyncio.Event()
    frame = b'data: {"choices": [{"index": 0, "delta": {"content": "one "}}]}\n\n'

    async def broken_framing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(frame), frame)
        )
        await writer.drain()
        await first_delta.wait()  # the client has the first delta, and waits for more
        writer.write(b"zz\r\n")  # not a chunk size
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client closes the connection
        writer.close()

    sent = count_requests(http)
    endpoint = await asyncio.start_server(broken_framing, "127.0.0.1", 0)
    received: list[ModelEvent] = []
    async with endpoint:
        port = endpoint.sockets[0].getsockname()[1]
        client = make_client(
            f"http://127.0.0.1:{port}/v1",
            http,
            sleep,
            timeouts=ModelTimeouts(first_token=30.0, idle=30.0),
        )
        with pytest.raises(ModelUnavailable) as caught:
            async with asyncio.timeout(WITHIN):
                async for event in client.stream_chat(chat()):
                    received.append(event)
                    first_delta.set()

    assert received == [TextDelta("one ")]
    assert caught.value.reason == "MODEL_STREAM_INTERRUPTED"
    assert "zz" in caught.value.message  # what broke, as either aiohttp parser words it
    assert len(sent) == 1  # output had started: not retried
    assert sleep.delays == []


async def test_malformed_stream_is_a_protocol_error_and_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(raw_sse([b'data: {"choices": [\n\n']))
    server.default_response = text_answer("must not be asked for")

    with pytest.raises(ModelProtocolError) as caught:
        await consume(make_client(server.base_url, http, sleep), [])

    assert not caught.value.retryable
    assert len(server.requests) == 1
    assert sleep.delays == []


# --- timeouts ---------------------------------------------------------------------------------


async def test_stall_before_the_first_token_times_out_and_is_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    released = Counter()
    server.default_response = stall_after("", on_disconnect=released)
    client = make_client(
        server.base_url, http, sleep, timeouts=ModelTimeouts(first_token=SHORT, idle=WITHIN)
    )
    started = time.monotonic()

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, [])

    assert time.monotonic() - started >= 3 * SHORT
    assert caught.value.reason == "MODEL_FIRST_TOKEN_TIMEOUT"
    assert caught.value.retryable
    assert len(server.requests) == 3
    assert sleep.delays == [0.5, 1.0]
    await released.reach(3)  # every stalled response was closed by the client


async def test_first_token_timeout_then_success(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(stall_after(""), text_answer("finally"))
    client = make_client(server.base_url, http, sleep, timeouts=ModelTimeouts(first_token=SHORT))
    received: list[ModelEvent] = []

    await consume(client, received)

    assert deltas(received) == ["finally"]
    assert len(server.requests) == 2


async def test_keep_alive_comments_do_not_stop_the_first_token_clock(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    server.enqueue(stall_after("", ping_interval=SHORT / 10))
    client = make_client(
        server.base_url,
        http,
        sleep,
        retry=RetryPolicy(max_attempts=1),
        timeouts=ModelTimeouts(first_token=SHORT),
    )

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, [])

    assert caught.value.reason == "MODEL_FIRST_TOKEN_TIMEOUT"


async def test_first_token_timeout_covers_a_whole_non_streamed_answer(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    released = Counter()
    server.enqueue(hang_until_disconnect(released))
    client = make_client(
        server.base_url,
        http,
        sleep,
        stream=False,
        retry=RetryPolicy(max_attempts=1),
        timeouts=ModelTimeouts(first_token=SHORT),
    )

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, [])

    assert caught.value.reason == "MODEL_FIRST_TOKEN_TIMEOUT"
    await released.reach(1)


async def test_stall_mid_stream_is_an_idle_timeout_and_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    released = Counter()
    server.enqueue(stall_after("Hello ", on_disconnect=released))
    server.default_response = text_answer("a second answer")
    client = make_client(
        server.base_url, http, sleep, timeouts=ModelTimeouts(first_token=WITHIN, idle=SHORT)
    )
    received: list[ModelEvent] = []

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, received)

    assert received == [TextDelta("Hello ")]
    assert caught.value.reason == "MODEL_IDLE_TIMEOUT"
    assert caught.value.retryable  # the client may send the turn again
    assert len(server.requests) == 1
    assert sleep.delays == []
    await released.reach(1)


@pytest.mark.parametrize(
    "first_delta",
    [
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "read_file"}}]},
        {"reasoning_content": "Let me think"},
    ],
    ids=["tool_call", "reasoning"],
)
async def test_output_other_than_text_also_ends_the_first_token_wait(
    server: FakeModelServer,
    http: httpx.AsyncClient,
    sleep: RecordingSleep,
    first_delta: dict[str, Any],
) -> None:
    # No answer text came, but the model had started: the stall is idle, and not retried.
    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event({"choices": [{"index": 0, "delta": first_delta}]})
        await out.wait_for_disconnect()
        out.abort()

    server.enqueue(ScriptedResponse(respond, "output then stall"))
    server.default_response = text_answer("a second answer")
    client = make_client(
        server.base_url, http, sleep, timeouts=ModelTimeouts(first_token=WITHIN, idle=SHORT)
    )
    received: list[ModelEvent] = []

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, received)

    assert not any(isinstance(event, TextDelta) for event in received)
    assert caught.value.reason == "MODEL_IDLE_TIMEOUT"
    assert len(server.requests) == 1


async def test_keep_alive_comments_do_not_reset_the_idle_clock(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    # A proxy that keeps pinging for a model that has hung must not hold the session forever.
    server.enqueue(stall_after("Hello ", ping_interval=SHORT / 10))
    client = make_client(
        server.base_url, http, sleep, timeouts=ModelTimeouts(first_token=WITHIN, idle=SHORT)
    )
    received: list[ModelEvent] = []

    with pytest.raises(ModelTimeout) as caught:
        await consume(client, received)

    assert received == [TextDelta("Hello ")]
    assert caught.value.reason == "MODEL_IDLE_TIMEOUT"


async def test_a_slow_consumer_is_not_an_idle_model(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    idle = SHORT / 2
    gates = [asyncio.Event(), asyncio.Event()]
    server.enqueue(stepped_answer([["one "], ["two "], ["three"]], list(gates)))
    client = make_client(server.base_url, http, sleep, timeouts=ModelTimeouts(idle=idle))
    received: list[ModelEvent] = []

    async for event in client.stream_chat(chat()):
        received.append(event)
        if isinstance(event, TextDelta):
            # Deliberately slower than the idle timeout: the model is not silent, we are busy.
            await asyncio.sleep(2 * idle)
            # Only now is the next word sent, so the client waits for it after our work:
            # the idle clock must start then, not when the last word arrived.
            if gates:
                gates.pop(0).set()

    assert deltas(received) == ["one ", "two ", "three"]
    assert len(server.requests) == 1


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A listening port whose accept queue is full: the kernel drops further SYNs, so a
    connection attempt hangs until the client gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        queued: list[socket.socket] = []
        try:
            while True:  # the queue holds one or two, depending on the kernel
                sock = socket.socket()
                queued.append(sock)
                sock.settimeout(0.2)
                try:
                    sock.connect(address)
                except TimeoutError:
                    break
                assert len(queued) < 10, "the accept queue never filled"
            yield address[1]
        finally:
            for sock in queued:
                sock.close()


async def test_connect_timeout_is_the_clients_not_the_shared_sessions(
    http: httpx.AsyncClient, sleep: RecordingSleep, unanswered_port: int
) -> None:
    connect = 0.3  # the shared session's is 5 s
    client = make_client(
        f"http://127.0.0.1:{unanswered_port}/v1",
        http,
        sleep,
        retry=RetryPolicy(max_attempts=1),
        timeouts=ModelTimeouts(connect=connect),
    )
    started = time.monotonic()

    with pytest.raises(ModelUnavailable) as caught:
        await consume(client, [])

    assert connect <= time.monotonic() - started < 2.5
    assert caught.value.reason == "MODEL_UNREACHABLE"
    assert caught.value.retryable


# --- cancellation -----------------------------------------------------------------------------


async def test_cancelling_while_waiting_for_the_first_token_is_not_retried(
    server: FakeModelServer, http: httpx.AsyncClient, sleep: RecordingSleep
) -> None:
    arrived = asyncio.Event()
    released = Counter()

    async def note_arrival(_body: dict[str, Any]) -> None:
        arrived.set()

    server.on_request = note_arrival
    server.default_response = stall_after("", on_disconnect=released)
    task = asyncio.create_task(consume(make_client(server.base_url, http, sleep), []))
    await asyncio.wait_for(arrived.wait(), WITHIN)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await released.reach(1)  # the response was closed
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_cancelling_during_the_backoff_sends_no_further_request(
    server: FakeModelServer, http: httpx.AsyncClient
) -> None:
    waiting = asyncio.Event()

    async def sleep_forever(delay: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    server.default_response = http_error(503)
    client = OpenAICompatibleClient(
        http, base_url=server.base_url, model="m", sleep=sleep_forever, random=lambda: 0.5
    )
    task = asyncio.create_task(consume(client, []))
    await asyncio.wait_for(waiting.wait(), WITHIN)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(server.requests) == 1


# --- logs -------------------------------------------------------------------------------------


async def test_retries_are_logged_without_the_api_key(
    server: FakeModelServer,
    http: httpx.AsyncClient,
    sleep: RecordingSleep,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    echo = f"proxy failed; request had Authorization: Bearer {API_KEY}"
    server.enqueue(http_error(500, echo), http_error(503, echo), http_error(502, echo))
    with pytest.raises(ModelUnavailable):
        await consume(make_client(server.base_url, http, sleep), [])
    with pytest.raises(ModelUnavailable):
        await consume(make_client(f"http://127.0.0.1:{closed_port}/v1", http, sleep), [])

    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]
    assert [message.split(",")[0] for message in warnings] == [
        f"model request failed on attempt {n} of 3" for n in (1, 2, 3, 1, 2, 3)
    ]
    assert "MODEL_HTTP_500" in warnings[0]
    assert "[REDACTED]" in warnings[0]  # the echoed key was there, and was hidden
    assert "MODEL_UNREACHABLE" in warnings[3]
    assert API_KEY not in caplog.text


# --- the policy itself ------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, jitter=0.0)

    delays = [backoff_delay(policy, attempt, lambda: 0.9) for attempt in range(1, 8)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0.0),
        (" 17 ", 17.0),
        ("Wed, 01 Jan 2025 00:00:30 GMT", 30.0),
        ("Tue, 31 Dec 2024 23:59:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        ("", None),
        ("\xb2", None),  # "²" (byte B2 read as latin-1): str.isdigit() says it is a digit
        ("\u0663", None),  # an Arabic-Indic three: not delta-seconds either
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"max_delay": float("inf")},
        {"jitter": 1.5},
        {"max_retry_after": float("nan")},
    ],
)
def test_retry_policy_rejects_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)


@pytest.mark.parametrize("options", [{"connect": 0.0}, {"first_token": -1.0}, {"idle": 0.0}])
def test_timeouts_reject_nonsense(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ModelTimeouts(**options)
