"""The interceptor every RPC passes first: request id, log context, metrics, tracing.

It sees each call end, however it ends (returned, aborted with a status, cancelled by the
client, crashed), so the status code it records is the one the client got.

The request id goes back as trailing metadata: initial metadata belongs to the servicers
(WatchEvents sends its cursor there, and it can be sent only once), and api.errors.abort
adds it to the trailers of every error status.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from agent_runtime.api.errors import REQUEST_ID_KEY
from agent_runtime.application import log_context

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from agent_runtime.api.rpc_tracing import RpcSpan

# A client's request id is kept if it looks like one; otherwise we make our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RpcMetrics(Protocol):
    def rpc_started(self, method: str, streaming: bool) -> None: ...

    def rpc_finished(self, method: str, code: str, seconds: float, streaming: bool) -> None: ...


class NoRpcMetrics:
    def rpc_started(self, method: str, streaming: bool) -> None:
        pass

    def rpc_finished(self, method: str, code: str, seconds: float, streaming: bool) -> None:
        pass


class _Call:
    """One RPC being observed."""

    def __init__(
        self,
        method: str,
        streaming: bool,
        metrics: RpcMetrics,
        span: RpcSpan | None,
    ) -> None:
        self.method = method
        self.streaming = streaming
        self._metrics = metrics
        self._span = span
        self._started = time.monotonic()
        metrics.rpc_started(method, streaming)

    def end(self, code: grpc.StatusCode) -> None:
        self._metrics.rpc_finished(
            self.method, code.name, time.monotonic() - self._started, self.streaming
        )
        if self._span is not None:
            self._span.end(code)


def _final_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> Any:
    """The status the client gets: what the servicer set or aborted with, else what grpc
    sends for the way the call ended."""
    set_code = context.code()
    if set_code is not None:
        return set_code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        # grpc cancels the handler both when the client goes away and when the deadline passes.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # grpc's answer to an exception a servicer let escape


class RpcObserver(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, metrics: RpcMetrics | None = None, tracer_provider: TracerProvider | None = None
    ) -> None:
        self._metrics = metrics or NoRpcMetrics()
        self._tracer: Any = None
        if tracer_provider is not None:
            from agent_runtime.api.rpc_tracing import rpc_tracer

            self._tracer = rpc_tracer(tracer_provider)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None  # an unknown method: grpc answers UNIMPLEMENTED itself
        method: str = details.method
        metadata = tuple(details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._awaited(handler.unary_unary, method, metadata, streaming=False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, metadata),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._awaited(handler.stream_unary, method, metadata, streaming=False),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method, metadata),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _begin(
        self,
        method: str,
        metadata: tuple[Any, ...],
        context: grpc.aio.ServicerContext[Any, Any],
        streaming: bool,
    ) -> _Call:
        request_id = _request_id(metadata)
        # This task serves only this RPC, so the binding ends with it (see log_context).
        log_context.bind(request_id=request_id)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        span = None
        if self._tracer is not None:
            from agent_runtime.api.rpc_tracing import RpcSpan

            span = RpcSpan(self._tracer, method, metadata)
        return _Call(method, streaming, self._metrics, span)

    def _awaited(
        self, behavior: Any, method: str, metadata: tuple[Any, ...], *, streaming: bool
    ) -> Any:
        """A unary method, or a streaming one that writes with context.write() (health's
        Watch): either way a coroutine to await."""

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = self._begin(method, metadata, context, streaming=streaming)
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.end(_final_code(context, error))

        return observed

    def _stream(self, behavior: Any, method: str, metadata: tuple[Any, ...]) -> Any:
        if inspect.iscoroutinefunction(behavior):
            return self._awaited(behavior, method, metadata, streaming=True)

        async def observed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = self._begin(method, metadata, context, streaming=True)
            error: BaseException | None = None
            try:
                # aclosing: a client that goes away closes the servicer's stream now, not
                # whenever the garbage collector gets to it.
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except GeneratorExit:
                error = asyncio.CancelledError()  # closed early: the call did not finish
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.end(_final_code(context, error))

        return observed


def _request_id(metadata: tuple[Any, ...]) -> str:
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex
