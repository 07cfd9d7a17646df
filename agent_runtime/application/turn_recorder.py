"""TurnRecorder: one running turn's state, and everything the turn writes in the RPC's unit
of work (messages, events, agent switches, its row and replay log).

Only the recorder's methods change the turn's state. Every chunk a client will see after a commit is
made here (its seq allocated, added to the replay log) before that commit, and handed out by
`chunks_to_send()` only after it: the replay log and the stream always agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.model_calls import ModelCalls
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.application.turn_log import TurnLog
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import DomainError, TurnAbandoned
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.model import (
    AgentSwitch,
    Message,
    Role,
    Session,
    StopReason,
    Turn,
    TurnError,
    Usage,
)
from agent_runtime.domain.model_output import ModelResponse
from agent_runtime.domain.text import storable
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.domain.usage import usage_day

ModelFor = Callable[[AgentProfile], str]


@dataclass(frozen=True, slots=True)
class _Committed:
    """What the database holds of the turn after its last commit."""

    turn: Turn
    agent: AgentProfile
    message_count: int
    history: int
    log: int


class TurnRecorder:
    def __init__(
        self,
        uow: UnitOfWork,
        session: Session,
        turn: Turn,
        agent: AgentProfile,
        history: list[Message],
        *,
        clock: Clock,
        ids: IdFactory,
        model_for: ModelFor,
        declared_tools: tuple[ToolDefinition, ...] = (),
        generation: GenerationConfig | None = None,
        grants: list[ApprovalGrant] | None = None,
        history_limit: int | None = None,
    ) -> None:
        self._uow = uow
        self.session = session
        self.turn = turn
        self.agent = agent
        self.history = history
        # The client's tools for this turn (the session's and the request's) and its
        # generation settings (the request's over the session's; the agent's go under them
        # at each model call, as the agent may change).
        self.declared_tools = declared_tools
        self.generation = generation or GenerationConfig()
        # How many messages of history were read (None: all of them were given).
        self._history_limit = history_limit
        # The session's APPROVE_ALWAYS grants in force: read when a model's tool call first
        # needs them (grants_in_force), as most turns end without one. None: not read yet.
        self._grants = grants
        self._now = clock
        self._ids = ids
        self._model_for = model_for
        self.usage = Usage()
        self.calls = ModelCalls()
        self.tool_calls = 0  # tool calls the model made (written into the turn's row)
        # The commit that ended the turn, with its usage counted, has landed.
        self.usage_counted = False
        self.log = TurnLog(session.session_id, turn.turn_id)
        self._inserted = False
        self._committed = self._snapshot()

    async def grants_in_force(self) -> list[ApprovalGrant]:
        """The session's APPROVE_ALWAYS grants in force, read once per turn."""
        if self._grants is None:
            self._grants = await self._uow.approvals.grants(self.session.session_id)
        return self._grants

    @property
    def finished(self) -> bool:
        return not self.turn.running

    @property
    def persisted(self) -> bool:
        """The turn's first commit (COMMIT #1) has landed."""
        return self._inserted

    @property
    def durably_finished(self) -> bool:
        """The commit that ended the turn has landed (`finished` may be only recorded)."""
        return not self._committed.turn.running

    def opened(self, input_message_id: str, *bodies: chunks.ChunkBody) -> None:
        """The input is recorded: TurnStarted, then the chunks the input itself makes."""
        self.turn.input_message_id = input_message_id or None
        self.chunk(chunks.TurnStarted(self.agent.name, input_message_id))
        for body in bodies:
            self.chunk(body)

    # -- chunks ---------------------------------------------------------------------------

    def chunk(self, body: chunks.ChunkBody) -> chunks.Chunk:
        """A new chunk with the next seq. A delta is sent at once; any other chunk goes into
        the replay log and out with chunks_to_send() once committed."""
        return self.log.add(body)

    def chunks_to_send(self) -> list[chunks.Chunk]:
        """The chunks recorded since the last call: to send once their commit has landed."""
        return self.log.to_send()

    # -- what the turn writes -------------------------------------------------------------

    async def append(self, role: Role, content: str, **fields: Any) -> Message:
        """Add a message to the history. Its text is kept as the store keeps it (U+0000 as
        U+FFFD, domain/text.py): the model and the client's chunks read what ListMessages
        will."""
        self.tool_calls += len(fields.get("tool_calls", ()))
        self.session.message_count += 1
        message = Message(
            self._ids("msg"),
            self.session.session_id,
            self.session.message_count,
            role,
            storable(content),
            created_at=self._now(),
            turn_id=self.turn.turn_id,
            **fields,
        )
        await self._uow.messages.add(message)
        self.history.append(message)
        await self.event(
            EventType.MESSAGE_PERSISTED,
            message_id=message.message_id,
            role=role.value,
            position=message.position,
        )
        return message

    async def event(self, type_: EventType, **data: Any) -> None:
        await self._uow.events.add(
            Event(type_, self.session.session_id, self._now(), self.turn.turn_id, data)
        )

    async def switch_agent(self, target: AgentProfile, reason: str) -> chunks.AgentSwitched:
        """Move the session to `target`; returns the chunk that tells the client."""
        reason = storable(reason)  # as the store keeps it, in the chunk too
        switch = AgentSwitch(self.agent.name, target.name, reason, self._now(), self.turn.turn_id)
        await self._uow.sessions.switch_agent(self.session.session_id, switch)
        await self.event(
            EventType.AGENT_SWITCHED,
            from_agent=switch.from_agent,
            to_agent=switch.to_agent,
            reason=reason,
        )
        self.session.agent = self.turn.agent = target.name
        self.agent = target
        self.turn.model = self._model_for(target)
        return chunks.AgentSwitched(switch.from_agent, switch.to_agent, reason)

    async def finish(self, stop: StopReason, *final: chunks.ChunkBody) -> None:
        """The turn is complete: `final` and TurnCompleted go out after the next commit,
        which also frees the session."""
        self.turn.complete(stop, self.usage, self._now())
        await self.event(
            EventType.TURN_COMPLETED,
            stop_reason=stop.value,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
        )
        for body in final:
            self.chunk(body)
        self.chunk(chunks.TurnCompleted(stop, self.usage))

    async def fail(self, error: DomainError) -> None:
        """The turn failed: Error and TurnCompleted go out (made first, so the client gets
        them even if the database refuses the rest)."""
        self.turn.fail(TurnError(error.reason, error.message), self.usage, self._now())
        self.chunk(chunks.TurnError(error))
        self.chunk(chunks.TurnCompleted(StopReason.ERROR, self.usage))
        await self._end_model_call(error.reason)
        await self.event(EventType.TURN_FAILED, reason=error.reason, message=error.message)

    async def cancel(self) -> None:
        """The turn was cancelled: TurnCompleted goes out (made first, as in fail())."""
        self.turn.cancel(self.usage, self._now())
        self.chunk(chunks.TurnCompleted(StopReason.CANCELLED, self.usage))
        await self._end_model_call("CANCELLED")
        await self.event(EventType.TURN_CANCELLED)

    async def _end_model_call(self, reason: str) -> None:
        """Before an abnormal end: the model call's outcome, and the text it streamed."""
        outcome, in_flight_ms, partial = self.calls.cut_short()
        if outcome is not None:  # answered, but the commit recording it failed
            await self.event(EventType.MODEL_REQUEST_COMPLETED, **outcome)
        elif in_flight_ms is not None:
            await self.event(
                EventType.MODEL_REQUEST_FAILED, reason=reason, duration_ms=in_flight_ms
            )
        if partial:
            await self.append(Role.ASSISTANT, partial, incomplete=True)

    # -- the model calls ------------------------------------------------------------------

    def used(self, usage: Usage) -> None:
        """Tokens a model call reported (counted even if what it answered is rolled back)."""
        self.usage = self.usage + usage

    async def model_answered(self, response: ModelResponse) -> None:
        """Record the model call's completion (its usage is counted already)."""
        outcome = self.calls.answered(self.turn.model, response)
        await self.event(EventType.MODEL_REQUEST_COMPLETED, **outcome)

    async def model_call_failed(self, reason: str) -> None:
        """A call whose failure the turn survives (the orchestrator's routing call)."""
        await self.event(
            EventType.MODEL_REQUEST_FAILED, reason=reason, duration_ms=self.calls.failed()
        )

    async def reload_history(self) -> None:
        """Read the history the model sees again (after messages were superseded)."""
        limit = len(self.history) if self._history_limit is None else self._history_limit
        self.history[:] = await self._uow.messages.recent(self.session.session_id, limit)

    # -- commits --------------------------------------------------------------------------

    async def save(self) -> None:
        """Write what every commit of the turn carries: its row with the replay log, and the
        session's activity (freeing the session once the turn is over). The save that ends
        the turn also counts its usage, for the session and the tenant's day: once, as only
        one commit can end it (its row is written only if the turn still runs in the
        database; else TurnAbandoned, and the transaction is to be rolled back)."""
        if not self.finished:  # a model call follows every commit of a running turn
            await self.event(
                EventType.MODEL_REQUEST_STARTED, model=self.turn.model, agent=self.agent.name
            )
        turn = self.turn
        turn.model_calls, turn.tool_calls = self.calls.requests, self.tool_calls
        turn.first_token_ms = self.calls.first_output_ms
        ending = self._ends_turn()
        if not self._inserted:
            await self._uow.turns.add(turn, self.log.chunks)
        elif not ending:
            await self._uow.turns.save(turn, self.log.chunks)
        elif not await self._uow.turns.end(turn, self.log.chunks):
            # Ended already, and counted: by a commit that landed though it reported a
            # failure (its ending is what the database keeps), or by recovery.
            raise TurnAbandoned(
                f"turn {turn.turn_id} no longer runs in the database: a commit that ended it "
                "landed though it reported a failure, or recovery reclaimed it"
            )
        now = self._now()
        self.session.last_activity_at = now
        count = self.session.message_count
        if self.finished:  # the turn is over: free the session, and count its usage once
            await self._uow.sessions.release_turn(
                self.session.session_id,
                turn.turn_id,
                now,
                message_count=count,
                count_usage=turn.usage if ending else None,
            )
        else:
            await self._uow.sessions.record_activity(
                self.session.session_id, now, message_count=count
            )
        if ending:
            await self._uow.usage.count_turn(usage_day(turn.finished_at or now), turn.usage)

    def _ends_turn(self) -> bool:
        """The turn is over, and was still running as of the last commit."""
        return self.finished and self._committed.turn.running

    def committed(self) -> None:
        """The commit after save() landed: that is what a rollback now returns to."""
        if self._ends_turn():
            self.usage_counted = True
        self._inserted = True
        self.calls.committed()
        self._committed = self._snapshot()

    async def roll_back(self) -> None:
        """Undo what was recorded since the last commit, in the database and here (here
        even if the database fails to roll back)."""
        try:
            await self._uow.rollback()
        finally:
            committed = self._committed
            self.turn = dataclasses.replace(committed.turn)
            self.agent = committed.agent
            self.session.agent = committed.agent.name
            self.session.message_count = committed.message_count
            del self.history[committed.history :]
            self.log.truncate(committed.log)
            # What the model streamed or answered since then stays known: an ending
            # records it (_end_model_call).

    def _snapshot(self) -> _Committed:
        return _Committed(
            dataclasses.replace(self.turn),
            self.agent,
            self.session.message_count,
            len(self.history),
            len(self.log.chunks),
        )
