"""Assembling the grpc.aio server: our services, health, reflection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection

from agent_runtime.api.agent_runtime_servicer import AgentRuntimeServicer
from agent_runtime.api.agent_servicer import AgentServicer
from agent_runtime.api.auth import ApiKeyInterceptor, ApiKeys
from agent_runtime.api.event_servicer import EventServicer
from agent_runtime.api.interceptors import MalformedRequestInterceptor
from agent_runtime.api.page_bytes import page_bytes
from agent_runtime.api.rpc_observer import RpcMetrics, RpcObserver
from agent_runtime.api.session_servicer import SessionServicer
from agent_runtime.api.stream_limits import StreamLimits
from agent_runtime.api.transport import TlsFiles, Transport
from agent_runtime.api.usage_servicer import UsageServicer
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.application.readiness import Readiness
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.session_queries import SessionQueries
from agent_runtime.application.turn_cancellation import TurnCanceller
from agent_runtime.application.turn_handler import TurnHandler
from agent_runtime.application.turn_queries import TurnQueries
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.application.usage_queries import UsageQueries
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    agent_runtime_pb2,
    agent_runtime_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

SERVICE_NAMES = tuple(
    service.full_name
    for module in (agent_runtime_pb2, session_pb2, agent_pb2, event_pb2, usage_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
)

DEFAULT_MAX_CONCURRENT_STREAMS = 2000


@dataclass(frozen=True, slots=True)
class UseCases:
    """What the servicers translate to: built by the composition root."""

    turns: TurnHandler
    turn_streams: TurnStreams
    turn_canceller: TurnCanceller
    sessions: SessionHandler
    session_queries: SessionQueries
    turn_queries: TurnQueries
    usage: UsageQueries
    agents: AgentCatalogue
    events: EventWatcher


class GrpcServer:
    """A started grpc.aio server with its health servicer: it reports readiness (a
    ReadinessListener) and, from shutdown on, draining."""

    def __init__(
        self, server: grpc.aio.Server, port: int, health_servicer: health.aio.HealthServicer
    ) -> None:
        self.server = server
        self.port = port
        self.health = health_servicer

    async def readiness_changed(self, readiness: Readiness) -> None:
        # Once draining, the servicer ignores this: NOT_SERVING stays.
        await _set_health(self.health, serving=readiness.ready)

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def _set_health(servicer: health.aio.HealthServicer, *, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await servicer.set(name, status)


async def start_grpc_server(
    listen: str,
    use_cases: UseCases,
    *,
    api_keys: ApiKeys,
    transport: Transport | None = None,
    tls: TlsFiles | None = None,
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
    max_streams_per_tenant: int | None = None,
    metrics: RpcMetrics | None = None,
    tracer_provider: TracerProvider | None = None,
    reflection: bool = True,
) -> GrpcServer:
    """Serve on `listen`: with `tls`, only over TLS (mTLS when it names a client CA).

    `api_keys` empty means development mode: every call acts for the default tenant (the
    composition root allows that on loopback addresses only). Health starts NOT_SERVING:
    readiness_changed() says when the runtime is ready. At most `max_concurrent_streams`
    streaming calls are open at once, `max_streams_per_tenant` of them (None: no lower
    limit) for any one tenant. `reflection` False keeps
    the schema private: the reflection service is not registered (UNIMPLEMENTED).
    """
    stream_limits = StreamLimits(max_concurrent_streams, max_streams_per_tenant)
    transport = transport or Transport()
    credentials = tls.server_credentials() if tls is not None else None
    server = grpc.aio.server(
        # The observer first: it sees the final status of every call, refusals included.
        # Then authentication: an unauthenticated call is refused before anything else.
        interceptors=[
            RpcObserver(metrics, tracer_provider),
            ApiKeyInterceptor(api_keys),
            MalformedRequestInterceptor(),
        ],
        options=transport.options(),
    )
    agent_runtime_pb2_grpc.add_AgentRuntimeServiceServicer_to_server(
        AgentRuntimeServicer(
            use_cases.turns,
            use_cases.turn_streams,
            use_cases.turn_canceller,
            stream_limits,
        ),
        server,
    )
    session_pb2_grpc.add_SessionServiceServicer_to_server(
        SessionServicer(
            use_cases.sessions,
            use_cases.session_queries,
            use_cases.turn_queries,
            max_page_bytes=page_bytes(transport),
        ),
        server,
    )
    usage_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(use_cases.usage, max_page_bytes=page_bytes(transport)), server
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(use_cases.agents), server)
    event_pb2_grpc.add_EventServiceServicer_to_server(
        EventServicer(use_cases.events, stream_limits), server
    )

    health_servicer = health.aio.HealthServicer()
    await _set_health(health_servicer, serving=False)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection:
        grpc_reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                grpc_reflection.SERVICE_NAME,
            ),
            server,
        )
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    await server.start()
    return GrpcServer(server, port, health_servicer)
