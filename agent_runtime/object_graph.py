"""The object graph the servicers call, built from the settings and the ports: the pure half
of the composition root (bootstrap opens the ports, starts the server and stops it all), so
tests build the same graph without a server."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_runtime.api.server import UseCases
from agent_runtime.application.chunk_relay import ChunkRelay
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.metrics import NoMetrics, RuntimeMetrics
from agent_runtime.application.ports import EventSignal, LLMClient, UnitOfWorkFactory
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.wiring import build_turns
from agent_runtime.config import Settings
from agent_runtime.domain.agents import AgentCatalogue


@dataclass(frozen=True, kw_only=True)
class Ports:
    """What the use cases run on: storage, the model, and what start-up loaded."""

    uows: UnitOfWorkFactory
    commits: EventSignal
    llm: LLMClient
    default_model: str
    agents: AgentCatalogue
    live: LiveTurnRegistry
    relay: ChunkRelay | None = None
    metrics: RuntimeMetrics = field(default_factory=NoMetrics)


def build_use_cases(settings: Settings, ports: Ports) -> UseCases:
    """The object graph the servicers call: pure, so tests build it without a server."""
    turns = build_turns(
        ports.uows,
        ports.llm,
        ports.agents,
        settings.turns,
        default_model=ports.default_model,
        registry=ports.live,
        commits=ports.commits,
        relay=ports.relay,
        metrics=ports.metrics,
    )
    return UseCases(
        turns=turns.handler,
        turn_streams=turns.streams,
        turn_canceller=turns.canceller,
        sessions=SessionHandler(ports.uows, ports.agents),
        agents=ports.agents,
        events=EventWatcher(ports.uows, ports.commits),
    )
