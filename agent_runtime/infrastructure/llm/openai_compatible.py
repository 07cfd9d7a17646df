"""A chat client for any endpoint that speaks the OpenAI chat-completions protocol.

OpenAI itself, vLLM, llama.cpp, Ollama, LM Studio, LiteLLM, OpenRouter... all accept
`POST {base_url}/chat/completions` and stream server-sent events of completion chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar, cast

import httpx

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import ModelError, ModelTimeout
from agent_runtime.domain.model_output import ModelEvent, ReasoningText, StreamedOutput, TextDelta
from agent_runtime.infrastructure.llm.answer import Answer
from agent_runtime.infrastructure.llm.chat_request_body import ChatRequestBody
from agent_runtime.infrastructure.llm.endpoint_errors import (
    exchange_error,
    not_an_answer,
    status_error,
)
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

# After [DONE] the rest of the body (normally just the chunked terminator) is read so the
# connection can go back to the pool, but a misbehaving server must not delay the answer.
_DRAIN_BYTES = 65536
_DRAIN_SECONDS = 1.0


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
        self._api_key = api_key
        self._stream = stream
        self._retry = retry
        self._timeouts = timeouts
        self._limits = limits
        self._body = ChatRequestBody(
            model=model,
            stream=stream,
            parallel_tool_calls_field=parallel_tool_calls_field,
            max_tokens_field=max_tokens_field,
        )
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

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        # Serialised here, once for every attempt.
        body = self._body.encode(request)
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
                    raise await self._first_output(
                        first_output_by, status_error(response, self._redact)
                    )
                content_type = response.headers.get("content-type", "").lower()
                # Some servers ignore "stream": true and answer one JSON document.
                streamed = self._stream and not content_type.startswith("application/json")
                if streamed and content_type and not content_type.startswith("text/event-stream"):
                    # E.g. a proxy's HTML page with 200: not an answer, and not worth a retry.
                    raise await self._first_output(
                        first_output_by, not_an_answer(response, content_type, self._redact)
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
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
            raise exchange_error(exc, self._redact) from exc

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

    def _redact(self, text: str) -> str:
        # Proxies and some providers echo the Authorization header back in error bodies.
        return text.replace(self._api_key, "[REDACTED]") if self._api_key else text


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
