"""OpenTelemetry: one server span per RPC, with the status code the client got, joined to the
caller's trace when it sends one (W3C traceparent)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent_runtime import bootstrap
from agent_runtime.config import DatabaseSettings, ServerSettings, Settings
from agent_runtime.infrastructure.llm.endpoint import ModelEndpoint
from agent_runtime.v1 import agent_pb2
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import FakeModelServer, stall_after, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import Client, connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def finished_span(spans: InMemorySpanExporter, method: str) -> ReadableSpan:
    """The server span of `method` (e.g. "/ListAgents"), once it has ended. The server ends
    it after the call's status has gone out, so the client may be back before it has."""

    def found() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if s.name.endswith(method)]

    async def ended() -> bool:
        return bool(found())

    await eventually(ended, what=f"the {method} span to end")
    [span] = found()
    return span


@pytest.fixture
async def traced_client(
    spans: InMemorySpanExporter, model_server: FakeModelServer, db_path: Path
) -> AsyncIterator[Client]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{db_path}"),
        model=ModelEndpoint(base_url=model_server.base_url),
    )
    runtime = await bootstrap.start(settings, tracer_provider=provider, env={})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield connect(channel)
    finally:
        await runtime.stop(grace=None)


async def test_every_rpc_gets_a_server_span_with_its_status_code(
    traced_client: Client, model_server: FakeModelServer, spans: InMemorySpanExporter
) -> None:
    model_server.enqueue(text_answer("Hello"))
    await traced_client.turn(user_message("s1", "hi"))
    with pytest.raises(grpc.aio.AioRpcError):
        await traced_client.sessions.GetSession(ses.GetSessionRequest(session_id="nope"))

    turn = await finished_span(spans, "/StreamMessage")
    assert turn.name == "agent_runtime.v1.AgentRuntimeService/StreamMessage"
    assert turn.kind is SpanKind.SERVER
    assert turn.attributes is not None
    assert turn.attributes["rpc.system"] == "grpc"
    assert turn.attributes["rpc.service"] == "agent_runtime.v1.AgentRuntimeService"
    assert turn.attributes["rpc.method"] == "StreamMessage"
    assert turn.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert turn.status.status_code is StatusCode.UNSET

    missing = await finished_span(spans, "/GetSession")
    assert missing.name == "agent_runtime.v1.SessionService/GetSession"
    assert missing.attributes is not None
    assert missing.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_call_past_its_deadline_marks_the_span_as_an_error(
    traced_client: Client, model_server: FakeModelServer, spans: InMemorySpanExporter
) -> None:
    model_server.enqueue(stall_after("thinking "))
    call = traced_client.runtime.StreamMessage(user_message("s1", "long job"), timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _chunk in call:
            pass
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    span = await finished_span(spans, "/StreamMessage")
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert span.status.status_code is StatusCode.ERROR


async def test_the_span_joins_the_callers_trace(
    traced_client: Client, spans: InMemorySpanExporter
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    await traced_client.agents.ListAgents(
        agent_pb2.ListAgentsRequest(), metadata=(("traceparent", traceparent),)
    )
    span = await finished_span(spans, "/ListAgents")
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC endpoint that keeps the span names it receives."""

    def __init__(self) -> None:
        self.span_names: list[str] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.span_names += [span.name for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_serve_exports_spans_to_the_configured_otlp_endpoint(tmp_path: Path) -> None:
    collector = OtlpCollector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    process = ServerProcess(
        tmp_path / "runtime.db",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds between batches
        },
    )
    try:
        await process.start()
        async with grpc.aio.insecure_channel(process.address) as channel:
            await connect(channel).agents.ListAgents(agent_pb2.ListAgentsRequest())

        async def exported() -> bool:
            return "agent_runtime.v1.AgentService/ListAgents" in collector.span_names

        await eventually(exported, what="the ListAgents span at the collector")
        assert await process.terminate() == 0, process.output()
    finally:
        process.kill()
        await server.stop(None)
