"""Composition root: builds the object graph from Settings and runs it."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.api.server import GrpcServer, start_grpc_server
from agent_runtime.application.ports import LLMClient
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.turn_handler import TurnHandler, TurnSettings
from agent_runtime.config import Settings
from agent_runtime.domain.agents import default_agents
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.llm.fake_model import FAKE_MODEL_NAME, FakeModelClient
from agent_runtime.infrastructure.llm.openai_compatible import (
    OpenAICompatibleClient,
    create_http_client,
)

log = logging.getLogger("agent_runtime")


async def migrate(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@dataclass
class RunningRuntime:
    """Everything `serve` started, so it can be stopped in the right order."""

    grpc: GrpcServer
    engine: AsyncEngine
    http: httpx.AsyncClient | None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self, grace: float | None = None) -> None:
        await self.grpc.stop(grace)
        if self.http is not None:
            await self.http.aclose()
        await self.engine.dispose()


async def start(settings: Settings) -> RunningRuntime:
    engine = create_engine(settings.database_url)
    await upgrade_to_head(engine)
    uow_factory = SqlAlchemyUnitOfWorkFactory(engine)

    # One process owns its turns; whatever a previous process left running is over.
    async with uow_factory() as uow:
        interrupted = await uow.turns.interrupt_running()
        await uow.commit()
    for turn in interrupted:
        log.warning(
            "turn %s of session %s was left running; marked interrupted",
            turn.turn_id,
            turn.session_id,
        )

    http: httpx.AsyncClient | None = None
    llm: LLMClient
    if settings.uses_fake_model:
        llm = FakeModelClient()
        model = FAKE_MODEL_NAME
        log.warning(
            "no AGENT_RUNTIME_LLM_BASE_URL set: using the built-in deterministic fake "
            "model (%s), not a real LLM",
            FAKE_MODEL_NAME,
        )
    else:
        http = create_http_client(
            connect_timeout=settings.llm_connect_timeout, read_timeout=settings.llm_read_timeout
        )
        llm = OpenAICompatibleClient(
            http,
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            extra_headers=settings.llm_extra_headers,
            stream=settings.llm_stream,
        )
        model = settings.llm_model
        log.info("model endpoint %s, model %s", settings.llm_base_url, model)

    agents = default_agents()
    turns = TurnHandler(
        uow_factory,
        llm,
        agents,
        TurnSettings(
            default_model=model,
            context_window_messages=settings.context_window_messages,
            max_message_bytes=settings.max_message_bytes,
        ),
    )
    sessions = SessionHandler(uow_factory, agents)
    try:
        grpc_server = await start_grpc_server(
            settings.listen,
            turns,
            sessions,
            # Room for the largest allowed message plus the envelope around it.
            max_message_bytes=max(4 * 1024 * 1024, settings.max_message_bytes * 2),
        )
    except BaseException:
        if http is not None:
            await http.aclose()
        await engine.dispose()
        raise
    return RunningRuntime(grpc_server, engine, http)


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
