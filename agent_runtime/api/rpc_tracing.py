"""A server span per RPC with the OpenTelemetry API (imported only when tracing is on).

Our own rather than opentelemetry-instrumentation-grpc's aio interceptor: that one learns a
call's status only from context.abort(), so every error we send with abort_with_status (all
of them: they carry google.rpc details) would be traced as a success, and its stream wrapper
leaves the servicer's stream to the garbage collector when a client goes away.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

TRACER_NAME = "agent_runtime.api"

# The codes that mean the server failed (OpenTelemetry's RPC conventions); the others are
# the client's problem and leave the span's status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def rpc_tracer(provider: TracerProvider) -> Tracer:
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


class RpcSpan:
    def __init__(self, tracer: Tracer, method: str, metadata: tuple[Any, ...]) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        # A caller's trace context (W3C traceparent) makes our span a child of its span.
        parent = propagate.extract({k: v for k, v in metadata if isinstance(v, str)})
        self._span = tracer.start_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        # Current for the rest of this RPC's task, so spans made while serving it nest here.
        otel_context.attach(trace.set_span_in_context(self._span, parent))

    def end(self, code: grpc.StatusCode) -> None:
        self._span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            self._span.set_status(Status(StatusCode.ERROR, code.name))
        self._span.end()
