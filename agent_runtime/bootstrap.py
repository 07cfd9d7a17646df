"""Composition root: builds the object graph from Settings and runs it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.access_config import is_loopback
from agent_runtime.api.auth import ApiKeys
from agent_runtime.api.server import GrpcServer, UseCases, start_grpc_server
from agent_runtime.api.transport import TlsFiles, Transport
from agent_runtime.application.agent_routing import AgentRouter
from agent_runtime.application.answer_recorder import AnswerRecorder
from agent_runtime.application.approval_gauge import PendingApprovalsGauge
from agent_runtime.application.chunk_relay import ChunkRelay
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.metrics import NoMetrics, RuntimeMetrics
from agent_runtime.application.model_step import ModelStep
from agent_runtime.application.periodic import Bounded, every
from agent_runtime.application.ports import EventSignal, LLMClient, UnitOfWorkFactory
from agent_runtime.application.readiness import ReadinessMonitor
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.turn_cancellation import TurnCanceller
from agent_runtime.application.turn_endings import TurnEndings
from agent_runtime.application.turn_handler import TurnCollaborators, TurnHandler
from agent_runtime.application.turn_inputs import TurnInputs
from agent_runtime.application.turn_opening import OpeningSettings, TurnOpener
from agent_runtime.application.turn_recovery import TurnRecovery
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.application.turn_validation import TurnValidator
from agent_runtime.config import DEFAULT_INSTANCE_ID, ConfigError, Settings
from agent_runtime.domain.agents import AgentCatalogue, default_agents
from agent_runtime.domain.response_processor import LLMResponseProcessor
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.infrastructure.agents_file import load_agents
from agent_runtime.infrastructure.db.commit_notifications import CommitListener
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.readiness import DatabaseReadinessProbe
from agent_runtime.infrastructure.db.sqlite_writer import WAL_CHECK_SECONDS
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.llm.fake_model import FAKE_MODEL_NAME, FakeModelClient
from agent_runtime.infrastructure.llm.http_client import create_http_client, proxy_for
from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
from agent_runtime.infrastructure.llm.resilience import ModelTimeouts, RetryPolicy
from agent_runtime.infrastructure.llm.untrusted_output import AnswerLimits
from agent_runtime.infrastructure.observability.prometheus import (
    MetricsHttpServer,
    PrometheusMetrics,
)
from agent_runtime.infrastructure.observability.tracing import (
    otlp_tracer_provider,
    tracing_requested,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from agent_runtime.infrastructure.nats_relay import NatsChunkRelay

log = logging.getLogger("agent_runtime")

# After the grace period: how long cancelled turns get to record their end.
CANCEL_DRAIN_SECONDS = 5.0


def _engine(settings: Settings) -> AsyncEngine:
    return create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
    )


async def migrate(settings: Settings) -> None:
    engine = _engine(settings)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@dataclass
class RunningRuntime:
    """Everything `serve` started, so it can be stopped in the right order."""

    grpc: GrpcServer
    engine: AsyncEngine
    uows: SqlAlchemyUnitOfWorkFactory
    http: httpx.AsyncClient | None
    # The lease keeper; the commit listener (PostgreSQL) or the WAL's limit (SQLite).
    background: list[asyncio.Task[None]]
    live: LiveTurnRegistry
    relay: NatsChunkRelay | None
    monitor: asyncio.Task[None]
    # What the monitor runs, to let a run in flight end before the engine closes.
    monitor_jobs: tuple[Bounded[Any], ...]
    metrics_server: MetricsHttpServer | None = None
    # Only one this runtime made (and so flushes and shuts down).
    own_tracer_provider: TracerProvider | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_server is None else self.metrics_server.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: no new calls, running turns get `grace` seconds to finish, then are
        cancelled cleanly (recorded CANCELLED, sessions freed, TurnCompleted sent)."""
        # First, so no readiness check can report SERVING while draining.
        self.monitor.cancel()
        await asyncio.gather(self.monitor, return_exceptions=True)
        for job in self.monitor_jobs:
            await job.finish(CANCEL_DRAIN_SECONDS)
        stopping = asyncio.create_task(
            self.grpc.stop(None if grace is None else grace + CANCEL_DRAIN_SECONDS)
        )
        if grace:
            await self.live.wait_idle(grace)
        for turn in self.live.all():
            turn.cancel()
        await self.live.wait_idle(CANCEL_DRAIN_SECONDS)
        await stopping
        if self.relay is not None:
            await self.relay.close(max_wait=2.0)  # after the last turns' chunks
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
        await self.uows.close()
        await self.engine.dispose()
        if self.metrics_server is not None:
            # Off the event loop: it waits for the server thread's poll loop to notice.
            await asyncio.to_thread(self.metrics_server.stop)
        if self.own_tracer_provider is not None:
            await asyncio.to_thread(self.own_tracer_provider.shutdown)  # flushes the spans


async def _close_storage(
    relay: NatsChunkRelay | None,
    uow_factory: SqlAlchemyUnitOfWorkFactory | None,
    engine: AsyncEngine,
) -> None:
    if relay is not None:
        await relay.close()
    if uow_factory is not None:
        await uow_factory.close()
    await engine.dispose()


async def start(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    env: Mapping[str, str] | None = None,
) -> RunningRuntime:
    """Start everything `settings` describe. `tracer_provider` traces the RPCs (tests pass
    one); without it, tracing is set up from the environment when configured."""
    # Checked first, so bad settings stop start-up before anything is touched.
    settings.validate()
    tls = _tls_files(settings)
    _check_model_proxy(settings)
    _log_access_mode(settings)
    agents = load_agents(settings.agents_file) if settings.agents_file else default_agents()
    env = os.environ if env is None else env
    prometheus = PrometheusMetrics() if settings.metrics_listen else None
    metrics: RuntimeMetrics = prometheus or NoMetrics()
    relay = await _chunk_relay(settings)
    engine = _engine(settings)
    _warn_if_unnamed_replica(settings, engine.dialect.name)
    uow_factory: SqlAlchemyUnitOfWorkFactory | None = None
    try:
        await upgrade_to_head(engine)
        uow_factory = SqlAlchemyUnitOfWorkFactory(
            engine,
            instance_id=settings.instance_id,
            commit_seconds=prometheus.commit_finished if prometheus else None,
        )
        live = LiveTurnRegistry(relay=relay)
        lease = timedelta(seconds=settings.lease_seconds)
        recovery = TurnRecovery(uow_factory, live, owner=settings.instance_id, lease=lease)
        # Whatever this instance left running in an earlier life is over, as are turns whose
        # owner stopped renewing their lease.
        await recovery.recover()
    except BaseException:  # e.g. the database is down: nothing opened so far may linger
        await _close_storage(relay, uow_factory, engine)
        raise

    http, llm, model = model_client(settings)
    turns = build_turns(
        uow_factory,
        llm,
        agents,
        TurnSettings(
            default_model=model,
            context_window_messages=settings.context_window_messages,
            max_message_bytes=settings.max_message_bytes,
            max_iterations=settings.max_iterations,
            approval_ttl=timedelta(seconds=settings.approval_ttl_seconds),
            turn_timeout=settings.turn_timeout_seconds,
            owner=settings.instance_id,
            lease=lease,
        ),
        registry=live,
        commits=uow_factory.signal,
        relay=relay,
        metrics=metrics,
    )
    use_cases = UseCases(
        turns=turns.handler,
        turn_streams=turns.streams,
        turn_canceller=turns.canceller,
        sessions=SessionHandler(uow_factory, agents),
        agents=agents,
        events=EventWatcher(uow_factory, uow_factory.signal),
    )
    own_tracer_provider = None
    if tracer_provider is None and tracing_requested(env, settings.otel_enabled):
        tracer_provider = own_tracer_provider = otlp_tracer_provider(env)
        log.info("tracing RPCs with OpenTelemetry (OTLP exporter)")
    grpc_server: GrpcServer | None = None
    metrics_server: MetricsHttpServer | None = None
    try:
        grpc_server = await start_grpc_server(
            settings.listen,
            use_cases,
            api_keys=ApiKeys(settings.api_keys),
            transport=_transport(settings),
            tls=tls,
            max_concurrent_streams=settings.max_concurrent_streams,
            metrics=prometheus,
            tracer_provider=tracer_provider,
        )
        if prometheus is not None:
            metrics_server = MetricsHttpServer(prometheus.registry, settings.metrics_listen)
            host = settings.metrics_listen.rsplit(":", 1)[0]
            log.info("metrics on http://%s:%d/metrics", host, metrics_server.port)
    except BaseException:
        if grpc_server is not None:
            await grpc_server.stop(None)
        if http is not None:
            await http.aclose()
        await _close_storage(relay, uow_factory, engine)
        if own_tracer_provider is not None:
            own_tracer_provider.shutdown()
        raise
    # Health says SERVING only once the database answers at the right schema version.
    readiness = ReadinessMonitor(
        DatabaseReadinessProbe(uow_factory),
        grpc_server,
        timeout=settings.health_check_timeout_seconds,
    )
    await readiness.check()
    bounded: list[Bounded[Any]] = [readiness.probe]
    jobs: list[Callable[[], Awaitable[object]]] = [readiness.check]
    if prometheus is not None:
        gauge = PendingApprovalsGauge(uow_factory, metrics)
        bounded.append(Bounded(gauge.sample, settings.health_check_timeout_seconds))
        jobs.append(bounded[-1])
    monitor = asyncio.create_task(
        every(settings.health_check_interval_seconds, *jobs),
        name="readiness-monitor",
    )
    keeper = asyncio.create_task(recovery.run(settings.lease_seconds / 3), name="lease-keeper")
    background = [keeper]
    if engine.dialect.name == "sqlite":
        # Readers that always overlap could otherwise keep SQLite's WAL growing.
        background.append(
            asyncio.create_task(every(WAL_CHECK_SECONDS, uow_factory.limit_wal), name="wal-limit")
        )
    if engine.dialect.name == "postgresql":
        # Other replicas' commits wake this one's followers (LISTEN/NOTIFY); see docs/deployment.md.
        listener = CommitListener(
            settings.database_url, uow_factory.signal, instance_id=settings.instance_id
        )
        background.append(asyncio.create_task(listener.run(), name="commit-listener"))
    return RunningRuntime(
        grpc_server,
        engine,
        uow_factory,
        http,
        background,
        live,
        relay,
        monitor,
        tuple(bounded),
        metrics_server,
        own_tracer_provider,
    )


@dataclass(frozen=True, slots=True)
class Turns:
    """The turn use cases: StreamMessage, ResumeStream and CancelTurn."""

    handler: TurnHandler
    streams: TurnStreams
    canceller: TurnCanceller


def build_turns(
    uow_factory: UnitOfWorkFactory,
    llm: LLMClient,
    agents: AgentCatalogue,
    settings: TurnSettings,
    *,
    registry: LiveTurnRegistry | None = None,
    commits: EventSignal | None = None,
    relay: ChunkRelay | None = None,
    metrics: RuntimeMetrics | None = None,
    clock: Clock = utc_now,
    ids: IdFactory = new_id,
) -> Turns:
    """The turn use cases and every collaborator of the TurnHandler, wired."""
    registry = registry if registry is not None else LiveTurnRegistry(relay=relay)
    metrics = metrics or NoMetrics()
    tools = ToolFilterService()
    model = ModelStep(llm, tools, metrics, context_window_messages=settings.context_window_messages)
    router = AgentRouter(agents, model)
    streams = TurnStreams(uow_factory, registry, commits=commits, relay=relay)
    opener = TurnOpener(
        agents,
        TurnInputs(agents, tools, clock),
        OpeningSettings(
            default_model=settings.default_model,
            history_messages=settings.context_window_messages,
            owner=settings.owner,
            lease=settings.lease,
        ),
        clock=clock,
        ids=ids,
    )
    answers = AnswerRecorder(
        LLMResponseProcessor(tools),
        router,
        max_iterations=settings.max_iterations,
        approval_ttl=settings.approval_ttl,
        clock=clock,
        ids=ids,
    )
    collaborators = TurnCollaborators(
        validator=TurnValidator(agents, settings.max_message_bytes),
        opener=opener,
        model=model,
        router=router,
        answers=answers,
        endings=TurnEndings(ids, settings.turn_timeout),
        registry=registry,
        streams=streams,
        metrics=metrics,
    )
    handler = TurnHandler(uow_factory, collaborators, turn_timeout=settings.turn_timeout)
    return Turns(handler, streams, TurnCanceller(uow_factory, registry))


async def _chunk_relay(settings: Settings) -> NatsChunkRelay | None:
    """The NATS chunk relay if configured; start-up fails if it cannot connect."""
    if not settings.nats_url:
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
        relay = await NatsChunkRelay.connect(settings.nats_url)
    except RelayUnavailable as exc:
        raise ConfigError(
            f"AGENT_RUNTIME_NATS_URL is set, but {exc}. Start NATS there, or unset "
            "AGENT_RUNTIME_NATS_URL to run without relaying chunks across replicas"
        ) from None
    log.info("relaying running turns' chunks over NATS at %s", redacted(settings.nats_url))
    return relay


def _tls_files(settings: Settings) -> TlsFiles | None:
    if not settings.uses_tls:
        return None
    tls = TlsFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    try:
        tls.server_credentials()  # read now: a missing file is a clear error, not a bind error
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}") from None
    return tls


def _transport(settings: Settings) -> Transport:
    receive, send = settings.grpc_message_limits()
    return Transport(
        max_receive_message_bytes=receive,
        max_send_message_bytes=send,
        keepalive_time_ms=settings.grpc_keepalive_time_ms,
        keepalive_timeout_ms=settings.grpc_keepalive_timeout_ms,
        keepalive_permit_without_calls=settings.grpc_keepalive_permit_without_calls,
        min_ping_interval_ms=settings.grpc_min_ping_interval_ms,
        max_pings_without_data=settings.grpc_max_pings_without_data,
        max_concurrent_streams_per_connection=settings.grpc_max_concurrent_streams_per_connection,
    )


def _warn_if_unnamed_replica(settings: Settings, dialect: str) -> None:
    """On PostgreSQL several replicas may share the database; each needs its own name."""
    if dialect == "postgresql" and settings.instance_id == DEFAULT_INSTANCE_ID:
        log.warning(
            "AGENT_RUNTIME_INSTANCE_ID is not set: this process runs as %r. Every replica on "
            "one database needs its own id (turn leases and commit notifications are per "
            "instance; replicas sharing one ignore each other's notifications)",
            DEFAULT_INSTANCE_ID,
        )


def _log_access_mode(settings: Settings) -> None:
    if settings.development_mode:
        log.warning(
            "development mode: no API keys configured, so there is no authentication and every "
            "call acts for tenant %r; listening on loopback only",
            DEFAULT_TENANT,
        )
        return
    log.info(
        "API keys configured: %d keys for %d tenants%s",
        len(settings.api_keys),
        len(set(settings.api_keys.values())),
        ", mutual TLS" if settings.tls_client_ca_file else ", TLS" if settings.uses_tls else "",
    )
    if not settings.uses_tls and not is_loopback(settings.listen):
        log.warning(
            "serving %s without TLS: API keys cross the network in clear text unless a "
            "proxy in front terminates TLS (AGENT_RUNTIME_TLS_CERT_FILE/_KEY_FILE)",
            settings.listen,
        )


def _check_model_proxy(settings: Settings) -> None:
    """A proxy in the environment the model client cannot use stops start-up, with why."""
    if settings.uses_fake_model:
        return
    try:
        proxy_for(settings.llm_base_url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def model_client(settings: Settings) -> tuple[httpx.AsyncClient | None, LLMClient, str]:
    """The model client (and the HTTP client it needs, to close at shutdown), and model name.

    The benchmark's floor (benchmarks/floor_relay.py) builds its model client here too, so
    that it talks to the model exactly as the runtime does."""
    if settings.uses_fake_model:
        log.warning(
            "no AGENT_RUNTIME_LLM_BASE_URL set: using the built-in deterministic fake "
            "model (%s), not a real LLM",
            FAKE_MODEL_NAME,
        )
        return None, FakeModelClient(settings.fake_model_word_delay_ms / 1000), FAKE_MODEL_NAME
    http = create_http_client(
        settings.llm_base_url,
        transport="httpx" if settings.llm_http_transport == "httpx" else "aiohttp",
        connect_timeout=settings.llm_connect_timeout,
        max_connections=settings.llm_max_connections,
        # A backstop only: the first-token and idle timeouts below are the real bounds.
        read_timeout=max(
            settings.llm_read_timeout, settings.llm_first_token_timeout, settings.llm_idle_timeout
        ),
    )
    llm = OpenAICompatibleClient(
        http,
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        extra_headers=settings.llm_extra_headers,
        stream=settings.llm_stream,
        retry=RetryPolicy(
            max_attempts=settings.llm_max_attempts, base_delay=settings.llm_retry_base_delay
        ),
        timeouts=ModelTimeouts(
            connect=settings.llm_connect_timeout,
            first_token=settings.llm_first_token_timeout,
            idle=settings.llm_idle_timeout,
        ),
        limits=AnswerLimits(
            answer=settings.max_answer_bytes,
            tool_arguments=settings.max_tool_argument_bytes,
            event=settings.llm_max_event_bytes,
        ),
    )
    log.info(
        "model endpoint %s, model %s (HTTP transport %s)",
        settings.llm_base_url,
        settings.llm_model,
        settings.llm_http_transport,
    )
    return http, llm, settings.llm_model


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    runtime = await start(settings)
    host = settings.listen.rsplit(":", 1)[0]
    # Tests and scripts read this line to learn the port when listening on port 0.
    log.info("listening on %s:%d", host, runtime.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", settings.shutdown_grace_seconds)
    await runtime.stop(settings.shutdown_grace_seconds)
    log.info("stopped")
