"""A chat client for any endpoint that speaks the OpenAI chat-completions protocol.

OpenAI itself, vLLM, llama.cpp, Ollama, LM Studio, LiteLLM, OpenRouter... all accept
`POST {base_url}/chat/completions` and stream server-sent events of completion chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast, get_args

import httpx

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import (
    ModelError,
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.model_output import ModelEvent, ReasoningText, StreamedOutput, TextDelta
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.infrastructure import json_codec
from agent_runtime.infrastructure.llm.answer import Answer, error_text, excerpt
from agent_runtime.infrastructure.llm.read_deadline import ReadDeadline, ReadDeadlineExceeded
from agent_runtime.infrastructure.llm.resilience import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUTS,
    ModelTimeouts,
    RetryPolicy,
    is_transient,
    retry_delay,
)
from agent_runtime.infrastructure.llm.untrusted_output import (
    DEFAULT_ANSWER_LIMITS,
    AnswerLimits,
    answer_too_large,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_ERROR_BODY_BYTES = 8192  # enough for any error message; a proxy's HTML page is not worth more
# After [DONE] the rest of the body (normally just the chunked terminator) is read so the
# connection can go back to the pool, but a misbehaving server must not delay the answer.
_DRAIN_BYTES = 65536
_DRAIN_SECONDS = 1.0

# Where the output token limit goes: OpenAI's current name, or the older one that llama.cpp,
# Ollama and other local servers read (AGENT_RUNTIME_LLM_MAX_TOKENS_FIELD).
MaxTokensField = Literal["max_completion_tokens", "max_tokens"]
MAX_TOKENS_FIELDS: tuple[MaxTokensField, ...] = get_args(MaxTokensField)


class OpenAICompatibleClient:
    """LLMClient over HTTP. Does not own `http` (create_http_client): whoever created it
    closes it.

    A request that fails before the model produced any output is sent again (see
    RetryPolicy); once output has arrived, a failure ends the answer with that error.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        extra_headers: Mapping[str, str] | None = None,
        stream: bool = True,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        timeouts: ModelTimeouts = DEFAULT_TIMEOUTS,
        limits: AnswerLimits = DEFAULT_ANSWER_LIMITS,
        parallel_tool_calls_field: bool = True,
        max_tokens_field: str = "max_completion_tokens",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        url = f"{base_url.rstrip('/')}/chat/completions"
        # Parsed once: a str would be parsed again by every request (~10 us). One that does
        # not parse stays a str, for the request to reject as an unusable base_url.
        self._url: httpx.URL | str = url
        with contextlib.suppress(httpx.InvalidURL):
            self._url = httpx.URL(url)
        self._model = model
        self._api_key = api_key
        self._stream = stream
        self._retry = retry
        self._timeouts = timeouts
        self._limits = limits
        # The runtime runs one tool at a time: `parallel_tool_calls: false` asks the model for
        # one call, unless the endpoint rejects the field.
        self._parallel_tool_calls_field = parallel_tool_calls_field
        if max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(f"max_tokens_field must be one of {MAX_TOKENS_FIELDS}")
        self._max_tokens_field = max_tokens_field
        self._sleep = sleep
        self._random = random
        # The shared client's timeouts, but this client's connect timeout. Its read timeout
        # stays as a backstop; first_token and idle are enforced around each read instead.
        shared = http.timeout
        self._http_timeout = httpx.Timeout(
            connect=timeouts.connect, read=shared.read, write=shared.write, pool=shared.pool
        )
        headers = httpx.Headers(
            {
                "Accept": "text/event-stream" if stream else "application/json",
                "Content-Type": "application/json",
            }
        )
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Last, so a provider needing another auth scheme (e.g. "api-key") can override. One
        # header per name, whatever its case: "authorization" replaces "Authorization".
        for name, value in (extra_headers or {}).items():
            headers[name] = value
        self._headers = headers
        self._tool_json = _ToolJson()

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        # Serialised here, once for every attempt.
        body = self._request_json(request)
        for attempt in itertools.count(1):
            answer = Answer(self._redact, self._limits)
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

    async def _attempt(self, body: bytes, answer: Answer) -> AsyncGenerator[ModelEvent, None]:
        """One request. `answer.output_started` tells the caller whether it may be retried."""
        clock = asyncio.get_running_loop()
        # Everything up to the model's first output (connecting, sending, the response head,
        # an error body, a whole non-streamed answer) must fit before this deadline.
        first_output_by = clock.time() + self._timeouts.first_token
        streamed = False
        try:
            request = self._http.build_request(
                "POST", self._url, content=body, headers=self._headers, timeout=self._http_timeout
            )
            # Not followed (the client's default): a redirect means a wrong base_url, and
            # following it would resend the key elsewhere. The 3xx is then an error like any
            # other non-2xx answer.
            response = await self._first_output(
                first_output_by, self._http.send(request, stream=True, follow_redirects=False)
            )
            try:
                if not 200 <= response.status_code < 300:
                    raise await self._first_output(first_output_by, self._status_error(response))
                content_type = response.headers.get("content-type", "").lower()
                # Some servers ignore "stream": true and answer one JSON document.
                streamed = self._stream and not content_type.startswith("application/json")
                if streamed and content_type and not content_type.startswith("text/event-stream"):
                    # E.g. a proxy's HTML page with 200: not an answer, and not worth a retry.
                    raise await self._first_output(
                        first_output_by, self._not_an_answer(response, content_type)
                    )
                if streamed:
                    outputs = self._read_stream(response, answer, first_output_by)
                    async with contextlib.aclosing(outputs):
                        async for output in outputs:
                            yield output
                else:
                    raw = await self._first_output(first_output_by, self._read_whole(response))
                    answer.parse_completion(raw)
            finally:
                # Also on cancellation: a response closed before its end closes its
                # connection, which is how the endpoint learns to stop generating.
                await response.aclose()
        except (
            httpx.ConnectError,  # refused, DNS, TLS handshake, the proxy unreachable
            httpx.ConnectTimeout,
            httpx.PoolTimeout,  # no free connection within the connect timeout
            httpx.ProxyError,  # the proxy refused the tunnel
        ) as exc:
            raise ModelUnavailable(
                f"cannot reach the model endpoint: {self._describe(exc)}",
                reason="MODEL_UNREACHABLE",
            ) from exc
        except httpx.TimeoutException as exc:  # the read or write timeout (a backstop)
            raise ModelTimeout(
                f"the model endpoint timed out ({type(exc).__name__}): {self._describe(exc)}"
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ModelRequestRejected(
                f"the model endpoint URL is not usable: {self._describe(exc)}",
                reason="MODEL_BAD_URL",
            ) from exc
        except httpx.DecodingError as exc:
            raise ModelProtocolError(
                f"the model endpoint sent an undecodable body: {self._describe(exc)}"
            ) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # The peer closed mid-body, a broken chunk, a reset, a response head not HTTP...
            raise ModelUnavailable(
                f"the connection to the model endpoint was lost: {self._describe(exc)}",
                reason="MODEL_STREAM_INTERRUPTED",
            ) from exc
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"the request to the model endpoint failed: {self._describe(exc)}"
            ) from exc

        # Yielded once the response is closed: nothing is held while the consumer works.
        result = answer.result()
        if not streamed and result.reasoning:
            yield ReasoningText(result.reasoning)
        if not streamed and result.content:
            yield TextDelta(result.content)
        yield result

    async def _read_stream(
        self, response: httpx.Response, answer: Answer, first_output_by: float
    ) -> AsyncGenerator[StreamedOutput, None]:
        """The output of an event stream (text, reasoning, the first tool call's arguments),
        each as soon as its bytes arrived.

        The timeouts are applied around each read, never across a yield: time the consumer
        spends on a delta is not the model's silence, and a timeout must not fire inside the
        consumer's code. Before the first output the deadline is fixed (first_token after the
        request was sent). After it, the idle clock restarts whenever we go back to waiting
        after a data event. SSE comments (": ping" keep-alives) restart neither clock: a
        proxy that keeps the connection warm for a model that has hung must not hold the
        session forever. (The shared client's read timeout, reset by any byte, stays a
        backstop.)
        """
        clock = asyncio.get_running_loop()
        deadline = first_output_by
        # Whatever has arrived (decompressed), at once: every piece that came in one network
        # read leaves as one piece, and the first never waits for more. A body that is not
        # compressed skips httpx's decoding layer (a generator step and a call per read).
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        pieces = response.aiter_bytes() if encoded else response.aiter_raw()
        # An async generator: closed here, not whenever it is collected.
        body = cast(AsyncGenerator[bytes, None], pieces)
        async with contextlib.aclosing(body) as chunks:
            try:
                async with ReadDeadline() as reads:  # one timer for the body, not one per read
                    while True:
                        reads.start(deadline)
                        chunk = await anext(chunks, b"")
                        reads.stop()
                        if not chunk:  # the end of the body
                            for output in answer.flush():
                                yield output
                            return
                        events_before = answer.events
                        # Tokens that arrived together leave together: one delta per read
                        # (and kind), not per token. Nothing waits for more (the turn's
                        # read-ahead merges reads it was too busy for).
                        for output in answer.feed(chunk):
                            yield output
                        if answer.done:
                            await _drain(chunks)
                            return
                        if answer.output_started and answer.events > events_before:
                            deadline = clock.time() + self._timeouts.idle
            except ReadDeadlineExceeded as exc:
                if not answer.output_started:
                    raise self._first_token_timeout() from exc
                raise ModelTimeout(
                    f"the model sent nothing for {self._timeouts.idle:g}s in the middle of "
                    "its answer",
                    reason="MODEL_IDLE_TIMEOUT",
                ) from exc

    async def _read_whole(self, response: httpx.Response) -> bytes:
        """A non-streamed answer's body, up to the event limit (it holds the whole answer)."""
        raw = bytearray()
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) > self._limits.event:
                raise answer_too_large(
                    f"the model endpoint's answer is larger than the {self._limits.event}-byte "
                    "limit (AGENT_RUNTIME_LLM_MAX_EVENT_BYTES)"
                )
        return bytes(raw)

    async def _first_output(self, deadline: float, step: Awaitable[_T]) -> _T:
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                return await step
        except TimeoutError as exc:
            if not timeout.expired():
                raise
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
        self._add_generation(body, request.generation)
        if self._stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body["stream"] = False
        if request.tools:
            choice = request.generation.tool_choice
            if choice is not None:
                body["tool_choice"] = (
                    {"type": "function", "function": {"name": choice.tool_name}}
                    if choice.mode is ToolChoiceMode.TOOL
                    else choice.mode.value
                )
            if self._parallel_tool_calls_field:
                body["parallel_tool_calls"] = False
        encoded = json_codec.dumps(body)
        if request.tools:  # the same every turn, and most of the body: encoded once each
            tools = ", ".join(self._tool_json.encoded(tool) for tool in request.tools)
            encoded = f'{encoded[:-1]},"tools":[{tools}]}}'
        return encoded.encode()

    def _add_generation(self, body: dict[str, Any], generation: GenerationConfig) -> None:
        """The generation settings that are set, under their OpenAI names."""
        if generation.is_empty:
            return
        if generation.temperature is not None:
            body["temperature"] = generation.temperature
        if generation.top_p is not None:
            body["top_p"] = generation.top_p
        if generation.max_output_tokens is not None:
            body[self._max_tokens_field] = generation.max_output_tokens
        if generation.stop:
            body["stop"] = list(generation.stop)
        if generation.seed is not None:
            body["seed"] = generation.seed
        if generation.reasoning_effort:
            body["reasoning_effort"] = generation.reasoning_effort

    async def _status_error(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        body = await self._body_excerpt(response)
        message = f"the model endpoint answered HTTP {status}"
        if body:
            message = f"{message}: {body}"
        metadata = {"http_status": str(status)}
        retry_after = response.headers.get("retry-after")
        if retry_after:
            metadata["retry_after"] = retry_after[:32]
        reason = f"MODEL_HTTP_{status}"
        if status == 429 or status >= 500:
            return ModelUnavailable(message, reason=reason, metadata=metadata)
        return ModelRequestRejected(message, reason=reason, metadata=metadata)

    async def _not_an_answer(self, response: httpx.Response, content_type: str) -> ModelError:
        body = await self._body_excerpt(response)
        return ModelProtocolError(
            f"the model endpoint answered HTTP {response.status_code} with {content_type!r}, "
            f"not an event stream" + (f": {body}" if body else "")
        )

    async def _body_excerpt(self, response: httpx.Response) -> str:
        raw = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) >= _ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass  # the status code already says what matters
        text = raw[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
        try:
            payload: Any = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        # Prefer the provider's own message over the raw JSON around it.
        return excerpt(error_text(payload) or text, self._redact)

    def _describe(self, exc: BaseException) -> str:
        return excerpt(str(exc) or type(exc).__name__, self._redact)

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
    """Each built-in tool definition's JSON, encoded once. Keyed by identity: those
    definitions live as long as the process (the catalogue), and the entry holds its
    definition, so an id cannot be reused while its entry is cached. A client-declared tool
    is a new definition every turn (read from the session's row or the request): it is
    encoded for its request only, never kept."""

    _LIMIT = 1024  # distinct definitions cached at most (more would be a bug elsewhere)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[ToolDefinition, str]] = {}

    def encoded(self, tool: ToolDefinition) -> str:
        if tool.declared:
            return _encoded(tool)
        entry = self._cache.get(id(tool))
        if entry is None or entry[0] is not tool:
            if len(self._cache) >= self._LIMIT:
                self._cache.clear()
            entry = self._cache[id(tool)] = (tool, _encoded(tool))
        return entry[1]


def _encoded(tool: ToolDefinition) -> str:
    return json.dumps(_wire_tool(tool), ensure_ascii=False)


def _wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    received = 0
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for chunk in chunks:
                received += len(chunk)
                if received > _DRAIN_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError):
        pass  # the answer is complete; at worst the connection is not reused
