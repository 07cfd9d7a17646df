"""The object graph the servicers call, built from the settings and the ports: the pure half
of the composition root (bootstrap opens the ports, starts the server and stops it all), so
tests build the same graph without a server. build_turns wires the turn use cases from
their collaborators (the TurnHandler builds none of its own)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from agent_runtime.api.mapping import shown_session_bytes
from agent_runtime.api.server import UseCases
from agent_runtime.application.agent_routing import AgentRouter
from agent_runtime.application.answer_recorder import AnswerRecorder
from agent_runtime.application.approval_decisions import ApprovalDecisions
from agent_runtime.application.call_ids import CallIds
from agent_runtime.application.chunk_relay import ChunkRelay
from agent_runtime.application.declared_tools import DeclaredToolChecks
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.metrics import NoMetrics, RuntimeMetrics, UsageModelLabels
from agent_runtime.application.model_step import ContextSettings, ModelStep
from agent_runtime.application.ports import EventSignal, LLMClient
from agent_runtime.application.quota_gate import QuotaGate
from agent_runtime.application.session_bound import SessionBound
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.session_queries import SessionQueries
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.application.turn_cancellation import TurnCanceller
from agent_runtime.application.turn_endings import TurnEndings
from agent_runtime.application.turn_handler import TurnCollaborators, TurnHandler
from agent_runtime.application.turn_inputs import TurnInputs
from agent_runtime.application.turn_opening import OpeningSettings, TurnOpener
from agent_runtime.application.turn_queries import TurnQueries
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.application.turn_validation import TurnValidator
from agent_runtime.application.usage_queries import UsageQueries
from agent_runtime.config import Settings
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.quotas import TenantQuota
from agent_runtime.domain.response_processor import LLMResponseProcessor
from agent_runtime.domain.tool_filter import ToolFilterService


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
    default_model: str,
    registry: LiveTurnRegistry | None = None,
    commits: EventSignal | None = None,
    relay: ChunkRelay | None = None,
    metrics: RuntimeMetrics | None = None,
    quotas: Mapping[str, TenantQuota] | None = None,
    declared_tools: DeclaredToolChecks | None = None,
    clock: Clock = utc_now,
    ids: IdFactory = new_id,
    session_bound: SessionBound | None = None,
) -> Turns:
    """The turn use cases and every collaborator of the TurnHandler, wired. `default_model`
    names the model of a request that names none; `quotas`: the tenants' (none: no limit);
    `declared_tools` checks the tools a request declares (shared with the session use cases,
    so that a schema declared on a session is remembered for the requests too)."""
    registry = registry if registry is not None else LiveTurnRegistry(relay=relay)
    bound = session_bound or SessionBound(shown_session_bytes)
    metrics = metrics or NoMetrics()
    tools = ToolFilterService()
    context = ContextSettings(
        window_messages=settings.context_window_messages,
        window_tokens=settings.context_window_tokens,
        max_tool_result_share=settings.context_max_tool_result_share,
    )
    call_ids = CallIds(uow_factory, ids)
    model = ModelStep(llm, tools, metrics, context=context, call_ids=call_ids)
    router = AgentRouter(agents, model)
    streams = TurnStreams(uow_factory, registry, commits=commits, relay=relay)
    opener = TurnOpener(
        agents,
        TurnInputs(agents, ApprovalDecisions(tools, clock, ids, bound), clock),
        OpeningSettings(
            default_model=default_model,
            history_messages=settings.context_window_messages,
            owner=settings.instance_id,
            lease=settings.lease,
        ),
        quotas=QuotaGate(quotas or {}, clock),
        clock=clock,
        ids=ids,
        tools=tools,
    )
    answers = AnswerRecorder(
        LLMResponseProcessor(tools),
        router,
        max_iterations=settings.max_iterations,
        approval_ttl=settings.approval_ttl,
        clock=clock,
        ids=ids,
        call_ids=call_ids,
    )
    collaborators = TurnCollaborators(
        validator=TurnValidator(agents, settings.max_message_bytes, declared_tools),
        opener=opener,
        model=model,
        router=router,
        answers=answers,
        endings=TurnEndings(ids),
        registry=registry,
        streams=streams,
        metrics=metrics,
        usage_models=UsageModelLabels.of(
            default_model, (agent.model for agent in agents.profiles.values())
        ),
    )
    handler = TurnHandler(uow_factory, collaborators, turn_timeout=settings.turn_timeout_seconds)
    return Turns(handler, streams, TurnCanceller(uow_factory, registry))


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
    # Where declared tools' JSON Schemas are checked, off the event loop (None: a thread of
    # the checks' own).
    schema_checks: Executor | None = None


def build_use_cases(settings: Settings, ports: Ports) -> UseCases:
    """The object graph the servicers call: pure, so tests build it without a server."""
    declared_tools = DeclaredToolChecks(thread=ports.schema_checks)
    bound = SessionBound(shown_session_bytes)
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
        quotas=settings.api_keys.tenant_quotas,
        declared_tools=declared_tools,
        session_bound=bound,
    )
    return UseCases(
        turns=turns.handler,
        turn_streams=turns.streams,
        turn_canceller=turns.canceller,
        sessions=SessionHandler(
            ports.uows,
            ports.agents,
            bound=bound,
            max_instructions_bytes=settings.turns.max_message_bytes,
            declared_tools=declared_tools,
        ),
        session_queries=SessionQueries(ports.uows),
        turn_queries=TurnQueries(ports.uows),
        usage=UsageQueries(ports.uows),
        agents=ports.agents,
        events=EventWatcher(ports.uows, ports.commits),
    )
