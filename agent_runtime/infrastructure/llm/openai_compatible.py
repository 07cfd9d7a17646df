"""A chat client for any endpoint that speaks the OpenAI chat-completions protocol.

OpenAI itself, vLLM, llama.cpp, Ollama, LM Studio, LiteLLM, OpenRouter... all accept
`POST {base_url}/chat/completions` and stream server-sent events of completion chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import ssl
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import (
    ModelError,
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.domain.model import Message, Role, Usage
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    RequestedToolCall,
    TextDelta,
)
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.infrastructure.llm.read_deadline import ReadDeadline, ReadDeadlineExceeded
from agent_runtime.infrastructure.llm.resilience import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUTS,
    ModelTimeouts,
    RetryPolicy,
    is_transient,
    retry_delay,
)
from agent_runtime.infrastructure.llm.sse import SSEEvent, SSEParser

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_EXCERPT_CHARS = 500
_ERROR_BODY_BYTES = 8192  # enough for any error message; a proxy's HTML page is not worth more
# After [DONE] the rest of the body (normally just the chunked terminator) is read so the
# connection can go back to the pool, but a misbehaving server must not delay the answer.
_DRAIN_BYTES = 65536
_DRAIN_SECONDS = 1.0

# Words in an error's type/code that mean "your request is wrong", so retrying cannot help.
_REJECTION_HINTS = (
    "invalid",
    "bad_request",
    "authentication",
    "unauthorized",
    "permission",
    "forbidden",
    "not_found",
    "context_length",
    "unsupported",
)

# Where reasoning models (DeepSeek-R1 on vLLM, OpenRouter...) stream their thinking. It is not
# part of the answer, but it shows the model is working: it stops the first-token clock.
_REASONING_KEYS = ("reasoning_content", "reasoning")

Redactor = Callable[[str], str]


def create_http_client(
    *, connect_timeout: float = 10.0, read_timeout: float = 300.0, max_connections: int = 1000
) -> aiohttp.ClientSession:
    """The one HTTP session the process shares between model clients (the caller closes it,
    `await session.close()`). Call it inside the running event loop, which the session keeps.

    read_timeout bounds the silence between two bytes, not the whole answer: a model may
    think for minutes before its first token, then stream for many more. Every streaming
    turn holds a connection for its whole answer, so max_connections bounds how many turns
    talk to the model at once (the others wait for a connection, up to connect_timeout).
    aiohttp's pool takes and gives back a connection in constant time whatever its size
    (no walk over the idle ones per request), so one pool holds them all.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,  # every connection goes to the one model endpoint anyway
        keepalive_timeout=30.0,
        ssl=ssl.create_default_context(),  # the system's CA bundle (SSL_CERT_FILE/_DIR apply)
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,  # an answer may stream for many minutes
            connect=connect_timeout,  # a free connection: waiting for one, then connecting
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        ),
        # Off: with it aiohttp reads ~/.netrc and the proxy variables in a thread on every
        # request, and would add netrc credentials to the model's requests. Each
        # OpenAICompatibleClient reads the proxy variables itself, once (proxy_for).
        trust_env=False,
        # Answers may come gzip-compressed: the SSE parser must see the decompressed bytes.
        auto_decompress=True,
    )


def proxy_for(url: str) -> str | None:
    """The proxy that HTTP_PROXY, HTTPS_PROXY or ALL_PROXY name for `url`, unless NO_PROXY
    exempts its host (the rules of urllib, which aiohttp's trust_env uses too). ValueError
    for a proxy aiohttp cannot use (e.g. socks5://)."""
    proxies = urllib.request.getproxies()
    parsed = urllib.parse.urlsplit(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or (parsed.hostname and urllib.request.proxy_bypass(parsed.hostname)):
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    named = urllib.parse.urlsplit(proxy)
    if named.scheme not in ("http", "https"):
        # aiohttp would send HTTP to it: every model call would fail, and not say why.
        raise ValueError(
            f"the proxy the environment names for {parsed.scheme}:// URLs "
            f"({named.scheme}://{named.hostname}:{named.port}) is not an HTTP proxy; "
            "only http:// and https:// proxies are supported"
        )
    return proxy


class OpenAICompatibleClient:
    """LLMClient over HTTP. Does not own `http`: whoever created it closes it.

    A request that fails before the model produced any output is sent again (see
    RetryPolicy); once output has arrived, a failure ends the answer with that error.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        extra_headers: Mapping[str, str] | None = None,
        stream: bool = True,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        timeouts: ModelTimeouts = DEFAULT_TIMEOUTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._url = f"{base_url.rstrip('/')}/chat/completions"
        self._model = model
        self._api_key = api_key
        self._stream = stream
        self._retry = retry
        self._timeouts = timeouts
        self._sleep = sleep
        self._random = random
        # The shared session's timeouts, but this client's connect timeout. Its read timeout
        # stays as a backstop; first_token and idle are enforced around each read instead.
        shared = http.timeout
        self._http_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=shared.connect,
            sock_connect=timeouts.connect,
            sock_read=shared.sock_read,
        )
        # Read from the environment once: the session does not (see create_http_client).
        self._proxy = proxy_for(self._url)
        headers = {
            "Accept": "text/event-stream" if stream else "application/json",
            # Said explicitly: aiohttp would call a bytes body application/octet-stream.
            "Content-Type": "application/json",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Last, so a provider needing another auth scheme (e.g. "api-key") can override.
        # aiohttp merges names case-insensitively: "authorization" replaces "Authorization".
        headers.update(extra_headers or {})
        self._headers = headers
        self._tool_json = _ToolJson()

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        # Serialised here, once for every attempt (json.dumps allows NaN, as before).
        body = self._request_json(request)
        for attempt in itertools.count(1):
            answer = _Answer(self._redact)
            try:
                # aclosing: an early exit (consumer's aclose, cancellation) closes the attempt,
                # and with it the HTTP response, at once rather than whenever it is collected.
                async with contextlib.aclosing(self._attempt(body, answer)) as events:
                    async for event in events:
                        yield event
                return
            except ModelError as error:
                # Only ModelError: CancelledError and GeneratorExit are never retried.
                if answer.output_started:
                    raise  # the consumer may have seen part of this answer: no second one
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    raise
            await self._sleep(delay)

    def _retry_delay(self, error: ModelError, attempt: int) -> float | None:
        """How long to wait before trying again after `error`, or None to give up."""
        decision = retry_delay(
            self._retry, error, attempt, random=self._random, now=datetime.now(UTC)
        )
        if decision.delay is None and not is_transient(error):
            return None  # a rejected request or a bad answer: nothing to say about retrying
        # Error messages are redacted when the errors are built: the key cannot leak here.
        log.warning(
            "model request failed on attempt %d of %d, %s (%s): %s: %s",
            attempt,
            self._retry.max_attempts,
            "giving up" if decision.delay is None else f"retrying in {decision.delay:.2f}s",
            decision.why,
            error.reason,
            error.message,
        )
        return decision.delay

    async def _attempt(self, body: bytes, answer: _Answer) -> AsyncGenerator[ModelEvent, None]:
        """One request. `answer.output_started` tells the caller whether it may be retried."""
        clock = asyncio.get_running_loop()
        # Everything up to the model's first output (connecting, sending, the response head,
        # an error body, a whole non-streamed answer) must fit before this deadline.
        first_output_by = clock.time() + self._timeouts.first_token
        streamed = False
        try:
            response = await self._first_output(
                first_output_by,
                self._http.request(
                    "POST",
                    self._url,
                    data=body,
                    headers=self._headers,
                    timeout=self._http_timeout,
                    proxy=self._proxy,
                    # A redirect means a wrong base_url; following it would resend the key
                    # elsewhere. The 3xx is then an error like any other non-2xx answer.
                    allow_redirects=False,
                ),
            )
            stop_watching = _fail_body_when_connection_lost(response)
            try:
                if not 200 <= response.status < 300:
                    raise await self._first_output(first_output_by, self._status_error(response))
                content_type = response.headers.get("content-type", "").lower()
                # Some servers ignore "stream": true and answer one JSON document.
                streamed = self._stream and not content_type.startswith("application/json")
                if streamed:
                    texts = self._read_stream(response, answer, first_output_by)
                    async with contextlib.aclosing(texts):
                        async for text in texts:
                            yield TextDelta(text)
                else:
                    raw = await self._first_output(first_output_by, response.read())
                    answer.parse_completion(raw)
            finally:
                stop_watching()  # before the connection can go back to the pool
                if response.content.at_eof():
                    response.release()  # the whole body was read: the connection is reusable
                else:
                    # Also on cancellation: a response closed before its end closes the
                    # connection, which is how the endpoint learns to stop generating.
                    response.close()
        except (
            aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake, the proxy unreachable
            aiohttp.ClientHttpProxyError,  # the proxy refused the tunnel
            aiohttp.ConnectionTimeoutError,  # no connection within the connect timeout
        ) as exc:
            raise ModelUnavailable(
                f"cannot reach the model endpoint: {self._describe(exc)}",
                reason="MODEL_UNREACHABLE",
            ) from exc
        except aiohttp.ServerTimeoutError as exc:  # the read timeout (a backstop)
            raise ModelTimeout(
                f"the model endpoint timed out ({type(exc).__name__}): {self._describe(exc)}"
            ) from exc
        except aiohttp.InvalidURL as exc:  # also a scheme other than http(s)
            raise ModelRequestRejected(
                f"the model endpoint URL is not usable: {self._describe(exc)}",
                reason="MODEL_BAD_URL",
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                raise ModelProtocolError(
                    f"the model endpoint sent an undecodable body: {self._describe(exc)}"
                ) from exc
            # The body ended early: the peer closed mid-body, a broken chunk...
            raise ModelUnavailable(
                f"the connection to the model endpoint was lost: {self._describe(exc)}",
                reason="MODEL_STREAM_INTERRUPTED",
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientResponseError) as exc:
            # ServerDisconnectedError, a reset, an unreadable response head...
            raise ModelUnavailable(
                f"the connection to the model endpoint was lost: {self._describe(exc)}",
                reason="MODEL_STREAM_INTERRUPTED",
            ) from exc
        except aiohttp.ClientError as exc:
            raise ModelUnavailable(
                f"the request to the model endpoint failed: {self._describe(exc)}"
            ) from exc

        # Yielded once the response is closed: nothing is held while the consumer works.
        result = answer.result()
        if not streamed and result.content:
            yield TextDelta(result.content)
        yield result

    async def _read_stream(
        self, response: aiohttp.ClientResponse, answer: _Answer, first_output_by: float
    ) -> AsyncGenerator[str, None]:
        """The text deltas of an event stream, each as soon as its bytes arrived.

        The timeouts are applied around each read, never across a yield: time the consumer
        spends on a delta is not the model's silence, and a timeout must not fire inside the
        consumer's code. Before the first output the deadline is fixed (first_token after the
        request was sent). After it, the idle clock restarts whenever we go back to waiting
        after a data event. SSE comments (": ping" keep-alives) restart neither clock: a
        proxy that keeps the connection warm for a model that has hung must not hold the
        session forever. (The shared session's read timeout, reset by any byte, stays a
        backstop.)
        """
        clock = asyncio.get_running_loop()
        # Whatever has arrived (decompressed), at once: every HTTP chunk that came in one
        # network read leaves as one piece, and the first never waits for more.
        read = functools.partial(_readany, response.content)
        deadline = first_output_by
        try:
            async with ReadDeadline() as reads:  # one timer for the body, not one per read
                while True:
                    reads.start(deadline)
                    chunk = await read()
                    reads.stop()
                    if not chunk:  # the end of the body
                        if texts := answer.flush():
                            yield "".join(texts)
                        return
                    events_before = answer.events
                    # Tokens that arrived together leave together: one delta per read, not
                    # per token. Nothing waits for more (the turn's read-ahead merges reads
                    # it was too busy for).
                    if texts := answer.feed(chunk):
                        yield "".join(texts)
                    if answer.done:
                        await _drain(response.content)
                        return
                    if answer.output_started and answer.events > events_before:
                        deadline = clock.time() + self._timeouts.idle
        except ReadDeadlineExceeded as exc:
            if not answer.output_started:
                raise self._first_token_timeout() from exc
            raise ModelTimeout(
                f"the model sent nothing for {self._timeouts.idle:g}s in the middle of its answer",
                reason="MODEL_IDLE_TIMEOUT",
            ) from exc

    async def _first_output(self, deadline: float, step: Awaitable[_T]) -> _T:
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                return await step
        except TimeoutError as exc:
            if not timeout.expired():
                raise  # aiohttp's own timeouts are TimeoutErrors too: mapped by the caller
            raise self._first_token_timeout() from exc

    def _first_token_timeout(self) -> ModelTimeout:
        return ModelTimeout(
            f"the model did not start answering within {self._timeouts.first_token:g}s",
            reason="MODEL_FIRST_TOKEN_TIMEOUT",
        )

    def _request_json(self, request: ChatRequest) -> bytes:
        messages: list[dict[str, Any]] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages.extend(_wire_message(message) for message in request.history)
        body: dict[str, Any] = {"model": request.model or self._model, "messages": messages}
        if self._stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body["stream"] = False
        encoded = json.dumps(body, ensure_ascii=False)
        if request.tools:  # the same every turn, and most of the body: encoded once each
            tools = ", ".join(self._tool_json.encoded(tool) for tool in request.tools)
            encoded = f'{encoded[:-1]}, "tools": [{tools}]}}'
        return encoded.encode()

    async def _status_error(self, response: aiohttp.ClientResponse) -> ModelError:
        status = response.status
        excerpt = await self._body_excerpt(response)
        message = f"the model endpoint answered HTTP {status}"
        if excerpt:
            message = f"{message}: {excerpt}"
        metadata = {"http_status": str(status)}
        retry_after = response.headers.get("retry-after")
        if retry_after:
            metadata["retry_after"] = retry_after[:32]
        reason = f"MODEL_HTTP_{status}"
        if status == 429 or status >= 500:
            return ModelUnavailable(message, reason=reason, metadata=metadata)
        return ModelRequestRejected(message, reason=reason, metadata=metadata)

    async def _body_excerpt(self, response: aiohttp.ClientResponse) -> str:
        raw = bytearray()
        try:
            while len(raw) < _ERROR_BODY_BYTES and (chunk := await _readany(response.content)):
                raw += chunk
        except aiohttp.ClientError:
            pass  # the status code already says what matters
        text = raw[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = None
        # Prefer the provider's own message over the raw JSON around it.
        return _excerpt(_error_text(payload) or text, self._redact)

    def _describe(self, exc: BaseException) -> str:
        return _excerpt(str(exc) or type(exc).__name__, self._redact)

    def _redact(self, text: str) -> str:
        # Proxies and some providers echo the Authorization header back in error bodies.
        return text.replace(self._api_key, "[REDACTED]") if self._api_key else text


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        # The chat format has no error flag on tool results: say it in the text.
        content = f"ERROR: {message.content}" if message.is_error else message.content
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
    if message.role is Role.ASSISTANT and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.tool_name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role.value, "content": message.content}


class _ToolJson:
    """Each tool definition's JSON, encoded once. Keyed by identity: the definitions are
    long-lived (the catalogue, the agents file), and the entry holds its definition, so an
    id cannot be reused while its entry is cached."""

    _LIMIT = 1024  # distinct definitions cached at most (more would be a bug elsewhere)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[ToolDefinition, str]] = {}

    def encoded(self, tool: ToolDefinition) -> str:
        entry = self._cache.get(id(tool))
        if entry is None or entry[0] is not tool:
            if len(self._cache) >= self._LIMIT:
                self._cache.clear()
            entry = self._cache[id(tool)] = (tool, json.dumps(_wire_tool(tool), ensure_ascii=False))
        return entry[1]


def _wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _fail_body_when_connection_lost(response: aiohttp.ClientResponse) -> Callable[[], None]:
    """Makes a read waiting for `response`'s body fail as soon as its connection is lost,
    until the returned function is called (call it before the connection can be reused).

    When a body's chunked framing breaks (a chunk-size line that is not hex), aiohttp's C
    parser (3.14) raises out of ResponseHandler.data_received after forgetting the body (its
    own `_payload = None`): the connection is closed, but the body's reader is never failed
    (aiohttp's pure-Python parser does fail it). A read already waiting would only end at
    our idle deadline. The protocol's `closed` future, resolved by connection_lost, is the
    signal; it costs a callback per response, nothing per read. `closed` is created lazily,
    on first access, and is None when the connection was lost before anyone asked: then no
    read can wait, it raises RuntimeError (see _readany). Without `closed` (another aiohttp)
    this improvement is lost, nothing else.
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    closed = getattr(protocol, "closed", None)
    if protocol is None or not isinstance(closed, asyncio.Future):
        return _nothing
    content = response.content

    def on_closed(future: asyncio.Future[None]) -> None:
        if content.is_eof() or content.exception() is not None:
            return  # the body was complete, or its reader already fails
        # The parser's error (HttpProcessingError) if that is why the connection closed.
        cause = protocol.exception()
        if cause is None and not future.cancelled():
            cause = future.exception()
        error = aiohttp.ClientPayloadError(
            "the connection closed before the end of the body"
            + (f" ({cause})" if cause is not None else "")
        )
        error.__cause__ = cause
        content.set_exception(error)

    # Whoever first asks for `closed` creates it, and must retrieve its exception (a reset
    # connection), or asyncio logs it when it is collected; one retriever per connection.
    closed.remove_done_callback(_retrieve_exception)
    closed.add_done_callback(_retrieve_exception)
    closed.add_done_callback(on_closed)

    def stop() -> None:
        closed.remove_done_callback(on_closed)

    return stop


def _nothing() -> None:
    pass


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


async def _readany(content: aiohttp.StreamReader) -> bytes:
    try:
        return await content.readany()
    # aiohttp (3.14) drops a body whose framing broke (a bad chunk size) without failing its
    # reader, and closes the connection: a read then raises this, not a ClientPayloadError.
    # (A read already waiting is failed by _fail_body_when_connection_lost.)
    except RuntimeError as exc:
        raise aiohttp.ClientPayloadError(
            f"the connection closed before the end of the body ({exc})"
        ) from exc
    except HttpProcessingError as exc:  # the pure-Python parser's framing errors, raw
        raise aiohttp.ClientPayloadError(f"the body is broken ({exc})") from exc


async def _drain(content: aiohttp.StreamReader) -> None:
    received = 0
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while chunk := await _readany(content):
                received += len(chunk)
                if received > _DRAIN_BYTES:
                    return
    except (TimeoutError, aiohttp.ClientError):
        pass  # the answer is complete; at worst the connection is not reused


@dataclass(slots=True)
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Answer:
    """Accumulates one answer from stream chunks (or a whole completion)."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._parser = SSEParser()
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self.done = False  # [DONE] received
        self.events = 0  # data events received (SSE comments are not events)
        # The model has produced something: text, a tool call or reasoning. From then on the
        # answer is under way, and a failure is not worth a retry.
        self.output_started = False

    def feed(self, chunk: bytes) -> list[str]:
        """Consume received bytes; return the text deltas they completed."""
        return self._apply_events(self._parser.feed(chunk))

    def flush(self) -> list[str]:
        return self._apply_events(self._parser.flush())

    def parse_completion(self, raw: bytes) -> None:
        payload = self._load(raw, "the response")
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ModelProtocolError("the model endpoint answered a completion without choices")
        if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
            raise ModelProtocolError("the model endpoint answered a choice without a message")
        self._apply_chunk(payload, message_key="message")
        self.done = True
        self.output_started = True

    def result(self) -> ModelResponse:
        if not self.done and self._finish_reason is None:
            raise ModelUnavailable(
                "the model stream ended before the answer was complete",
                reason="MODEL_STREAM_TRUNCATED",
            )
        return ModelResponse(
            content="".join(self._text),
            tool_calls=tuple(
                self._finished_call(index, call) for index, call in sorted(self._calls.items())
            ),
            usage=self._usage,
            finish_reason=self._finish_reason,
        )

    def _apply_events(self, events: list[SSEEvent]) -> list[str]:
        deltas: list[str] = []
        for event in events:
            if self.done:
                break  # anything after [DONE] is not part of the answer
            self.events += 1
            if event.data.strip() == "[DONE]":
                self.done = True
                continue
            payload = self._load(event.data, "a stream event")
            text = self._apply_chunk(payload, message_key="delta")
            if text:
                deltas.append(text)
        return deltas

    def _load(self, data: str | bytes, what: str) -> dict[str, Any]:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            shown = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            raise ModelProtocolError(
                f"{what} from the model endpoint is not valid JSON: "
                f"{_excerpt(shown, self._redact, 200)}"
            ) from exc
        if not isinstance(payload, dict):
            raise ModelProtocolError(f"{what} from the model endpoint is not a JSON object")
        if payload.get("error") is not None:
            raise _payload_error(payload["error"], self._redact)
        return payload

    def _apply_chunk(self, payload: dict[str, Any], *, message_key: str) -> str:
        usage = _usage(payload.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = payload.get("choices")
        # The usage chunk comes with empty choices; other chunks may carry none either.
        if not isinstance(choices, list) or not choices:
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ModelProtocolError("a choice from the model endpoint is not a JSON object")
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self._finish_reason = finish_reason
        message = choice.get(message_key)
        if not isinstance(message, dict):
            return ""
        tool_calls = message.get("tool_calls")
        if tool_calls or any(message.get(key) for key in _REASONING_KEYS):
            self.output_started = True
        if isinstance(tool_calls, list):
            for position, fragment in enumerate(tool_calls):
                # A whole completion lists its calls without "index": their order is the index.
                self._add_fragment(fragment, position if message_key == "message" else None)
        text = _content_text(message.get("content"))
        if text:
            self.output_started = True
            self._text.append(text)
        return text

    def _add_fragment(self, fragment: object, default_index: int | None) -> None:
        if not isinstance(fragment, dict):
            raise ModelProtocolError("a tool call from the model endpoint is not a JSON object")
        raw_id = fragment.get("id")
        call_id = raw_id if isinstance(raw_id, str) else ""
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = default_index if default_index is not None else self._index_for(call_id)
        call = self._calls.setdefault(index, _PartialCall())
        if call_id and not call.call_id:
            call.call_id = call_id
        function = fragment.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        # Some servers repeat the name in every fragment: the first one is the name.
        if isinstance(name, str) and name and not call.name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments.append(arguments)
        elif isinstance(arguments, dict):
            call.arguments.append(json.dumps(arguments))  # a few servers send an object

    def _index_for(self, call_id: str) -> int:
        """Where a fragment without "index" belongs: its id's call, else a new or the last one."""
        if call_id:
            for index, call in self._calls.items():
                if call.call_id == call_id:
                    return index
            return max(self._calls, default=-1) + 1
        return max(self._calls, default=0)

    @staticmethod
    def _finished_call(index: int, call: _PartialCall) -> RequestedToolCall:
        if not call.name:
            raise ModelProtocolError(f"the model sent tool call #{index} without a function name")
        return RequestedToolCall(
            call_id=call.call_id or f"call_{uuid.uuid4().hex}",
            tool_name=call.name,
            arguments_json="".join(call.arguments),
        )


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return Usage(prompt_tokens=count("prompt_tokens"), completion_tokens=count("completion_tokens"))


def _error_text(payload: object) -> str:
    """The human message in an error document: {"error": {"message": ...}} and variants."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _payload_error(error: object, redact: Redactor) -> ModelError:
    """An error object sent with HTTP 200 (typically mid-stream)."""
    message = _error_text({"error": error}) or json.dumps(error)
    kind = ""
    status: int | None = None
    if isinstance(error, dict):
        kind = " ".join(str(error.get(key, "")) for key in ("type", "code", "status")).lower()
        for key in ("code", "status"):
            value = error.get(key)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                status = value
                break
    text = f"the model endpoint reported an error: {_excerpt(message, redact)}"
    if status is not None and 400 <= status < 500 and status != 429:
        return ModelRequestRejected(text)
    if "rate" not in kind and any(hint in kind for hint in _REJECTION_HINTS):
        return ModelRequestRejected(text)
    return ModelUnavailable(text, reason="MODEL_STREAM_ERROR")


def _excerpt(text: str, redact: Redactor, limit: int = _EXCERPT_CHARS) -> str:
    # Redacted before truncating, so a key cut in half cannot survive.
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
