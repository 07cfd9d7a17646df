"""TurnWriter: how a turn records things — messages, events, agent switches, commits.

Every chunk a client will see after a commit is created (seq allocated, added to the
replay log) before that commit, so the replay log and the stream always agree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.ports import UnitOfWork, UnitOfWorkFactory
from agent_runtime.application.turn_state import TurnState
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import AgentSwitch, Message, Role, StopReason


class TurnWriter:
    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, ids: IdFactory, default_model: str
    ) -> None:
        self._uow_factory = uow_factory
        self._now = clock
        self._ids = ids
        self._default_model = default_model

    def model_for(self, agent: AgentProfile, requested: str) -> str:
        return requested or agent.model or self._default_model

    async def append(
        self, uow: UnitOfWork, state: TurnState, role: Role, content: str, **fields: Any
    ) -> Message:
        message = Message(
            self._ids("msg"),
            state.session.session_id,
            state.next_position(),
            role,
            content,
            created_at=self._now(),
            turn_id=state.turn.turn_id,
            **fields,
        )
        await uow.messages.add(message)
        state.history.append(message)
        await self.event(
            uow,
            state,
            EventType.MESSAGE_PERSISTED,
            message_id=message.message_id,
            role=role.value,
            position=message.position,
        )
        return message

    async def event(self, uow: UnitOfWork, state: TurnState, type_: EventType, **data: Any) -> None:
        await uow.events.add(
            Event(type_, state.session.session_id, self._now(), state.turn.turn_id, data)
        )

    async def switch_agent(
        self, uow: UnitOfWork, state: TurnState, target: AgentProfile, reason: str
    ) -> chunks.AgentSwitched:
        switch = AgentSwitch(state.agent.name, target.name, reason, self._now(), state.turn.turn_id)
        await uow.sessions.switch_agent(state.session.session_id, switch)
        await self.event(
            uow,
            state,
            EventType.AGENT_SWITCHED,
            from_agent=switch.from_agent,
            to_agent=switch.to_agent,
            reason=reason,
        )
        state.session.agent = target.name
        state.agent = target
        state.turn.agent = target.name
        state.turn.model = self.model_for(target, state.model_override)
        return chunks.AgentSwitched(switch.from_agent, switch.to_agent, reason)

    async def commit(
        self,
        uow: UnitOfWork,
        state: TurnState,
        *,
        model_call_next: bool = False,
        release: bool = False,
    ) -> None:
        if model_call_next:
            await self.event(
                uow,
                state,
                EventType.MODEL_REQUEST_STARTED,
                model=state.turn.model,
                agent=state.agent.name,
            )
        if state.log_changed:
            await uow.turns.save_chunks(state.turn, state.log)
            state.log_written()
        now = self._now()
        state.session.last_activity_at = now
        await uow.sessions.record_activity(
            state.session.session_id,
            now,
            message_count=state.session.message_count,
            release_turn=state.turn.turn_id if release else None,
        )
        # A commit that has started is seen through even if the client cancels meanwhile, so
        # the turn's state is known (committed or not) before the cancellation is handled.
        commit = asyncio.ensure_future(uow.commit())
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            if not commit.done():
                await asyncio.wait([commit])
            if not commit.cancelled() and commit.exception() is None:
                state.committed(release=release)
            raise
        state.committed(release=release)

    async def finish(
        self,
        uow: UnitOfWork,
        state: TurnState,
        stop: StopReason,
        final: Sequence[chunks.ChunkBody] = (),
    ) -> list[chunks.Chunk]:
        """Complete the turn and free the session in one commit; return the chunks to send."""
        state.turn.complete(stop, state.usage, self._now())
        await self.event(
            uow,
            state,
            EventType.TURN_COMPLETED,
            stop_reason=stop.value,
            prompt_tokens=state.usage.prompt_tokens,
            completion_tokens=state.usage.completion_tokens,
        )
        out = [state.chunk(body) for body in final]
        out.append(state.chunk(chunks.TurnCompleted(stop, state.usage)))
        await _save_turn_and_log(uow, state)
        await self.commit(uow, state, release=True)
        return out

    async def record_ending(
        self,
        state: TurnState,
        type_: EventType,
        model_reason: str,
        final: Sequence[chunks.ChunkBody],
        *,
        keep_partial: bool = False,
        **data: Any,
    ) -> list[chunks.Chunk]:
        """Persist a failed or cancelled turn (and partial text) in its own short transaction
        and free the session; return the chunks that end its stream."""
        async with self._uow_factory(state.tenant_id) as uow:
            if state.model_outcome is not None:
                # The model answered, but the commit that recorded it was rolled back.
                await self.event(
                    uow, state, EventType.MODEL_REQUEST_COMPLETED, **state.model_outcome
                )
            elif state.model_call_started is not None:
                await self.event(
                    uow,
                    state,
                    EventType.MODEL_REQUEST_FAILED,
                    reason=model_reason,
                    duration_ms=call_ms(state),
                )
            partial = "".join(state.partial_text)
            if keep_partial and partial:
                await self.append(uow, state, Role.ASSISTANT, partial, incomplete=True)
            await self.event(uow, state, type_, **data)
            out = [state.chunk(body) for body in final]
            await _save_turn_and_log(uow, state)
            await self.commit(uow, state, release=True)
        return out


async def _save_turn_and_log(uow: UnitOfWork, state: TurnState) -> None:
    await uow.turns.save(state.turn, state.log)  # one statement for the turn and its log
    state.log_written()


def call_ms(state: TurnState) -> int:
    """How long the model call in flight has been running, in milliseconds."""
    if state.model_call_started is None:
        return 0
    return round((time.monotonic() - state.model_call_started) * 1000)
