"""Composition root: opens what the settings describe, builds the object graph on it
(object_graph.py) and serves it.

Every resource start() opens is entered once on an exit stack, right after it is opened; a
failed start-up and stop() both unwind it, in the reverse order: the readiness monitor
first (no check says SERVING while draining), then the drain of the server and its running
turns, then what they needed (the lease keeper and database jobs, storage, the relay), then
metrics, tracing and the model's HTTP client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.access_config import log_access_mode
from agent_runtime.api.auth import ApiKeys
from agent_runtime.api.server import GrpcServer, start_grpc_server
from agent_runtime.application.declared_tools import schema_check_thread
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.metrics import NoMetrics
from agent_runtime.background import database_jobs, monitor_readiness, own_turns
from agent_runtime.collector import settle_after_start_up
from agent_runtime.config import ConfigError, Settings
from agent_runtime.domain.agents import default_agents
from agent_runtime.infrastructure.agents_file import load_agents
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.llm.endpoint import open_model_client
from agent_runtime.infrastructure.observability.prometheus import (
    MetricsHttpServer,
    PrometheusMetrics,
)
from agent_runtime.infrastructure.observability.tracing import (
    otlp_tracer_provider,
    tracing_requested,
)
from agent_runtime.object_graph import Ports, build_use_cases

if TYPE_CHECKING:
    import httpx
    from opentelemetry.trace import TracerProvider

    from agent_runtime.infrastructure.nats_relay import NatsChunkRelay

log = logging.getLogger("agent_runtime")

# After the grace period: how long cancelled turns get to record their end.
CANCEL_DRAIN_SECONDS = 5.0


def _engine(settings: Settings) -> AsyncEngine:
    pool = settings.database.pool_size
    return create_engine(settings.database.url, pool_size=pool, max_overflow=pool)


async def migrate(settings: Settings) -> None:
    engine = _engine(settings)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@dataclass
class _Drain:
    """Stops the server: no new calls, running turns get `grace` seconds to finish, then are
    cancelled cleanly (recorded CANCELLED, sessions freed, TurnCompleted sent)."""

    grpc: GrpcServer
    live: LiveTurnRegistry
    grace: float | None = None  # stop() sets it; a failed start-up stops at once

    async def __call__(self) -> None:
        grace = self.grace
        stopping = asyncio.create_task(
            self.grpc.stop(None if grace is None else grace + CANCEL_DRAIN_SECONDS)
        )
        if grace:
            await self.live.wait_idle(grace)
        for turn in self.live.all():
            turn.cancel()
        await self.live.wait_idle(CANCEL_DRAIN_SECONDS)
        await stopping


@dataclass(kw_only=True)
class RunningRuntime:
    """What `serve` started; stop() unwinds it."""

    grpc: GrpcServer
    http: httpx.AsyncClient | None
    relay: NatsChunkRelay | None
    metrics_server: MetricsHttpServer | None
    resources: AsyncExitStack
    drain: _Drain

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_server is None else self.metrics_server.port

    async def stop(self, grace: float | None = None) -> None:
        self.drain.grace = grace
        await self.resources.aclose()


async def start(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    env: Mapping[str, str] | None = None,
) -> RunningRuntime:
    """Start everything `settings` describe. `tracer_provider` traces the RPCs (tests pass
    one); without it, tracing is set up from the environment when configured."""
    # Checked first, so bad settings stop start-up before anything is touched.
    settings.check()
    tls = settings.tls if settings.tls.enabled else None
    try:  # now: a missing TLS file is a clear error, not a bind error after migrating
        if tls is not None:
            tls.server_credentials()
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}") from None
    log_access_mode(settings.api_keys, settings.server.listen, settings.tls)
    agents_file = settings.server.agents_file
    agents = load_agents(agents_file) if agents_file else default_agents()
    env = os.environ if env is None else env
    async with AsyncExitStack() as stack:
        try:
            http, llm, model_name = open_model_client(
                settings.model, settings.answers, settings.fake_model
            )
        except ValueError as exc:  # a proxy in the environment the client cannot use
            raise ConfigError(str(exc)) from None
        if http is not None:
            stack.push_async_callback(http.aclose)
        if tracer_provider is None and tracing_requested(env, settings.observability.otel_enabled):
            tracer_provider = own_provider = otlp_tracer_provider(env)
            stack.push_async_callback(asyncio.to_thread, own_provider.shutdown)  # flushes
            log.info("tracing RPCs with OpenTelemetry (OTLP exporter)")
        prometheus, metrics_server = _metrics(settings, stack)
        relay = await _chunk_relay(settings)
        if relay is not None:
            stack.push_async_callback(relay.close, max_wait=2.0)  # after the last turns' chunks
        engine = _engine(settings)
        stack.push_async_callback(engine.dispose)
        await upgrade_to_head(engine)
        uows = SqlAlchemyUnitOfWorkFactory(
            engine,
            instance_id=settings.turns.instance_id,
            commit_seconds=prometheus.commit_finished if prometheus else None,
        )
        stack.push_async_callback(uows.close)
        live = LiveTurnRegistry(relay=relay)
        await own_turns(settings, uows, live, stack)
        database_jobs(settings, engine.dialect.name, uows, stack)
        schema_checks = schema_check_thread()
        stack.callback(schema_checks.shutdown, cancel_futures=True)  # checks are short
        ports = Ports(
            uows=uows,
            commits=uows.signal,
            llm=llm,
            default_model=model_name,
            agents=agents,
            live=live,
            relay=relay,
            metrics=prometheus or NoMetrics(),
            schema_checks=schema_checks,
        )
        grpc_server = await start_grpc_server(
            settings.server.listen,
            build_use_cases(settings, ports),
            api_keys=ApiKeys(settings.api_keys.by_key),
            transport=settings.grpc_transport,
            tls=tls,
            max_concurrent_streams=settings.server.max_concurrent_streams,
            max_streams_per_tenant=settings.server.max_streams_per_tenant,
            metrics=prometheus,
            tracer_provider=tracer_provider,
            reflection=settings.server.reflection,
        )
        drain = _Drain(grpc_server, live)
        stack.push_async_callback(drain)
        await monitor_readiness(settings, grpc_server, uows, prometheus, stack)
        runtime = RunningRuntime(
            grpc=grpc_server,
            http=http,
            relay=relay,
            metrics_server=metrics_server,
            resources=stack.pop_all(),  # from here on, stop() unwinds them
            drain=drain,
        )
    return runtime


def _metrics(
    settings: Settings, stack: AsyncExitStack
) -> tuple[PrometheusMetrics | None, MetricsHttpServer | None]:
    listen = settings.observability.metrics_listen
    if not listen:
        return None, None
    prometheus = PrometheusMetrics()
    server = MetricsHttpServer(prometheus.registry, listen)
    # Off the event loop: it waits for the server thread's poll loop to notice.
    stack.push_async_callback(asyncio.to_thread, server.stop)
    log.info("metrics on http://%s:%d/metrics", listen.rsplit(":", 1)[0], server.port)
    return prometheus, server


async def _chunk_relay(settings: Settings) -> NatsChunkRelay | None:
    """The NATS chunk relay if configured; start-up fails if it cannot connect."""
    if not settings.server.nats_url:
        return None
    try:
        # Imported only when used: nats-py is an optional extra (agent-runtime[nats]).
        from agent_runtime.infrastructure.nats_relay import (
            NatsChunkRelay,
            RelayUnavailable,
            redacted,
        )
    except ImportError as exc:
        raise ConfigError(
            f"AGENT_RUNTIME_NATS_URL is set, but the NATS client is not installed ({exc}): "
            "install agent-runtime[nats]"
        ) from None
    try:
        relay = await NatsChunkRelay.connect(settings.server.nats_url)
    except RelayUnavailable as exc:
        raise ConfigError(
            f"AGENT_RUNTIME_NATS_URL is set, but {exc}. Start NATS there, or unset "
            "AGENT_RUNTIME_NATS_URL to run without relaying chunks across replicas"
        ) from None
    log.info("relaying running turns' chunks over NATS at %s", redacted(settings.server.nats_url))
    return relay


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    runtime = await start(settings)
    settle_after_start_up()
    host = settings.server.listen.rsplit(":", 1)[0]
    # Tests and scripts read this line to learn the port when listening on port 0.
    log.info("listening on %s:%d", host, runtime.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    grace = settings.server.shutdown_grace_seconds
    log.info("shutting down (grace %.1fs)", grace)
    await runtime.stop(grace)
    log.info("stopped")
