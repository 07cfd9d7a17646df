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
    TurnCommand,
)
from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.ports import UnitOfWork
from agent_runtime.application.quota_gate import QuotaGate
from agent_runtime.application.turn_inputs import TurnInputs
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.application.turn_validation import fingerprint
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue, AgentProfile
from agent_runtime.domain.errors import InvalidInput, NotFound, SessionBusy, WriteConflict
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Session, Turn

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
    ) -> None:
        self._agents = agents
        self._inputs = inputs
        self._settings = settings
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
            raise session_not_found(session_id)
        history = []
        grants = []
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
        else:
            await self._claim(uow, session_id, turn_id, cmd)
            history = await uow.messages.recent(session_id, self._settings.history_messages)
            grants = await uow.approvals.grants(session_id)

        agent = self._agents.get(_requested_agent(cmd) or session.agent)
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
            grants=grants,
            history_limit=self._settings.history_messages,
        )
        await recorder.event(EventType.TURN_STARTED, input=_input_kind(cmd))
        opening = await self._inputs.open(uow, recorder, cmd)
        turn.input_message_id = opening.input_message_id or None
        recorder.chunk(chunks.TurnStarted(agent.name, opening.input_message_id))
        for body in opening.chunks:
            recorder.chunk(body)
        if not opening.run_model:
            await recorder.finish(opening.stop_reason)
        return recorder

    async def _claim(
        self, uow: UnitOfWork, session_id: str, turn_id: str, cmd: TurnCommand
    ) -> None:
        if cmd.client_message_id:
            await self._check_retry(uow, session_id, cmd)
        running = await uow.sessions.claim_turn(session_id, turn_id)
        if running is None:
            # Past a quota, the claim is rolled back with everything else.
            await self._quotas.admit(uow, cmd.tenant_id)
            return
        if cmd.client_message_id:
            # On PostgreSQL the claim waited for the running turn to commit, after the check
            # above: that turn may be the one this retry is looking for.
            await self._check_retry(uow, session_id, cmd)
        raise SessionBusy(
            f"session {session_id} is running turn {running}",
            metadata={"session_id": session_id, "turn_id": running},
        )

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


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id} not found",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )
