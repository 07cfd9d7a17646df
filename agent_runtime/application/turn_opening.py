"""TurnOpener: a turn's first steps, before COMMIT #1. It loads the session (creating it
on first use), claims its one running turn, and records the input and TurnStarted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from agent_runtime.application import log_context
from agent_runtime.application.commands import (
    DecideApproval,
    EditMessage,
    Regenerate,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.quota_gate import QuotaGate
from agent_runtime.application.session_lookup import session_deleted, session_not_found
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.application.turn_inputs import TurnInputs
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.application.turn_validation import fingerprint
from agent_runtime.domain.agents import AgentCatalogue, AgentProfile
from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import InvalidInput, SessionBusy, WriteConflict
from agent_runtime.domain.events import EventType
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Session, Turn
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tool_schemas import check_beside_the_session
from agent_runtime.domain.tools import ToolDefinition

# A concurrent request can insert the same session or idempotency key first (PostgreSQL runs
# transactions side by side; SQLite queues them). Starting over then reads what it wrote.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Replay:
    """The input is a retry of a turn that exists already: follow that turn instead."""

    turn: Turn


class _FoundRetry(Exception):
    def __init__(self, turn: Turn) -> None:
        self.turn = turn


@dataclass(frozen=True, slots=True)
class OpeningSettings:
    default_model: str
    # Messages of history read for the model at most (the context window).
    history_messages: int
    # Who runs the turns of this process, and how long a turn's claim lasts unrenewed.
    owner: str
    lease: timedelta


class TurnOpener:
    def __init__(
        self,
        agents: AgentCatalogue,
        inputs: TurnInputs,
        settings: OpeningSettings,
        *,
        quotas: QuotaGate,
        clock: Clock,
        ids: IdFactory,
        tools: ToolFilterService | None = None,
    ) -> None:
        self._agents = agents
        self._inputs = inputs
        self._settings = settings
        self._tools = tools or ToolFilterService()
        self._quotas = quotas
        self._now = clock
        self._ids = ids

    async def open(self, uow: UnitOfWork, cmd: TurnCommand) -> TurnRecorder | Replay:
        """The turn, its input and TurnStarted recorded (not committed); or the turn this
        input already started. Raises DomainError (nothing recorded) if it cannot start."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._open(uow, cmd)
            except _FoundRetry as retry:
                return Replay(retry.turn)
            except WriteConflict:
                if attempt == _ATTEMPTS:
                    raise
                await uow.rollback()
        raise AssertionError("unreachable")

    async def _open(self, uow: UnitOfWork, cmd: TurnCommand) -> TurnRecorder:
        now = self._now()
        turn_id = self._ids("turn")
        session_id = cmd.session_id or self._ids("ses")
        log_context.bind(session_id=session_id, turn_id=turn_id)
        await self._quotas.hold(uow, cmd.tenant_id)
        session = await uow.sessions.get(session_id)
        if session is not None and session.deleted_at is not None:
            # Its id is not used again, whatever the input (session_lookup.py says why).
            raise session_deleted(session)
        history = []
        grants: list[ApprovalGrant] | None = None  # read when a tool call needs them
        if session is None:
            if isinstance(cmd, SubmitToolResult | DecideApproval | Regenerate | EditMessage):
                raise session_not_found(session_id)
            await self._quotas.admit(uow, cmd.tenant_id)
            session = Session(
                session_id,
                self._agents.get(_requested_agent(cmd)).name,
                created_at=now,
                last_activity_at=now,
                running_turn_id=turn_id,
            )
            await uow.sessions.add(session)
            grants = []  # a new session has none
        else:
            await self._claim(uow, session_id, turn_id, cmd)
            history = await uow.messages.recent(session_id, self._settings.history_messages)

        agent = self._agents.get(_requested_agent(cmd) or session.agent)
        declared, generation = self._client_controls(cmd, session, agent)
        model = getattr(cmd, "model", "")
        turn = Turn(
            turn_id,
            session_id,
            agent=agent.name,
            model=self._model_for(agent, model),
            started_at=now,
            client_message_id=cmd.client_message_id or None,
            # Compared only when a retry carries the same idempotency key.
            input_hash=fingerprint(cmd) if cmd.client_message_id else None,
            owner=self._settings.owner,
            lease_expires_at=now + self._settings.lease,
        )
        recorder = TurnRecorder(
            uow,
            session,
            turn,
            agent,
            history,
            clock=self._now,
            ids=self._ids,
            model_for=lambda profile: self._model_for(profile, model),
            declared_tools=declared,
            generation=generation,
            grants=grants,
            history_limit=self._settings.history_messages,
        )
        await recorder.event(EventType.TURN_STARTED, input=_input_kind(cmd))
        opening = await self._inputs.open(uow, recorder, cmd)
        recorder.opened(opening.input_message_id, *opening.chunks)
        if not opening.run_model:
            await recorder.finish(opening.stop_reason)
        return recorder

    async def _claim(
        self, uow: UnitOfWork, session_id: str, turn_id: str, cmd: TurnCommand
    ) -> None:
        running = await uow.sessions.claim_turn(session_id, turn_id)
        if cmd.client_message_id:
            # After the claim, once: on PostgreSQL the claim may have waited for a running
            # turn to commit, and that turn may be the one this retry is looking for. A
            # retry found rolls the claim back with everything else.
            await self._check_retry(uow, session_id, cmd)
        if running is not None:
            raise SessionBusy(
                f"session {session_id} is running turn {running}",
                metadata={"session_id": session_id, "turn_id": running},
            )
        # Past a quota, the claim is rolled back with everything else.
        await self._quotas.admit(uow, cmd.tenant_id)

    async def _check_retry(self, uow: UnitOfWork, session_id: str, cmd: TurnCommand) -> None:
        existing = await uow.turns.find_by_client_message_id(session_id, cmd.client_message_id)
        if existing is None:
            return
        if existing.input_hash != fingerprint(cmd):
            raise InvalidInput.field(
                "client_message_id",
                f"was already used in this session for a different input (turn {existing.turn_id})",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        raise _FoundRetry(existing)

    def _client_controls(
        self, cmd: TurnCommand, session: Session, agent: AgentProfile
    ) -> tuple[tuple[ToolDefinition, ...], GenerationConfig]:
        """The tools the client declares for this turn (the session's, then the request's)
        and its generation settings (the request's over the session's). Raises InvalidInput
        for a request tool the session declares too, or a tool_choice naming a tool the
        turn's agent is not offered."""
        if isinstance(cmd, SwitchAgent):
            return session.tools, session.generation
        check_beside_the_session(cmd.tools, "tools", session.tools)
        declared = session.tools + cmd.tools
        generation = cmd.generation.over(session.generation)
        choice = generation.tool_choice
        if choice is not None and choice.mode is ToolChoiceMode.TOOL:
            offered = {tool.name for tool in self._tools.tools_for(agent, declared)}
            if choice.tool_name not in offered:
                where = "generation" if cmd.generation.tool_choice else "session.generation"
                raise InvalidInput.field(
                    f"{where}.tool_choice.tool_name",
                    f"tool '{choice.tool_name}' is not offered to agent '{agent.name}' in this "
                    "turn",
                    reason="INVALID_GENERATION_CONFIG",
                )
        return declared, generation

    def _model_for(self, agent: AgentProfile, requested: str) -> str:
        return requested or agent.model or self._settings.default_model


def _requested_agent(cmd: TurnCommand) -> str:
    return cmd.agent if isinstance(cmd, SendUserMessage) else ""


def _input_kind(cmd: TurnCommand) -> str:
    match cmd:
        case SendUserMessage():
            return "user_message"
        case SubmitToolResult():
            return "tool_result"
        case DecideApproval():
            return "approval_decision"
        case Regenerate():
            return "regenerate"
        case EditMessage():
            return "edit_message"
        case _:
            return "switch_agent"
