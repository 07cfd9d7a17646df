"""TurnHandler: one StreamMessage call, one turn, every final chunk after its commit.

The unit of work belongs to the RPC: it is opened here, inside the streaming call, and
closed when the stream ends, however it ends. No transaction is open while the model
streams, so a slow model never holds a database lock. docs/architecture.md walks through
this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from agent_runtime.application.agent_routing import AgentRouter
from agent_runtime.application.answer_recorder import AnswerRecorder
from agent_runtime.application.commands import TurnCommand
from agent_runtime.application.live_turns import LiveTurn, LiveTurnRegistry
from agent_runtime.application.metrics import RuntimeMetrics, UsageModelLabels
from agent_runtime.application.model_step import ModelStep
from agent_runtime.application.run_to_completion import run_to_completion
from agent_runtime.application.store_ports import UnitOfWork, UnitOfWorkFactory
from agent_runtime.application.turn_endings import TurnEndings
from agent_runtime.application.turn_opening import Replay, TurnOpener
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.application.turn_validation import TurnValidator
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import DomainError
from agent_runtime.domain.model_output import ModelResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnCollaborators:
    """What the handler coordinates; built by the composition root (bootstrap.py)."""

    validator: TurnValidator
    opener: TurnOpener
    model: ModelStep
    router: AgentRouter
    answers: AnswerRecorder
    endings: TurnEndings
    registry: LiveTurnRegistry  # the turns running in this process
    streams: TurnStreams
    metrics: RuntimeMetrics
    usage_models: UsageModelLabels  # the model label of the usage metrics


class TurnHandler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        collaborators: TurnCollaborators,
        *,
        turn_timeout: float | None,
    ) -> None:
        self._uow_factory = uow_factory
        self._validator = collaborators.validator
        self._opener = collaborators.opener
        self._model = collaborators.model
        self._router = collaborators.router
        self._answers = collaborators.answers
        self._endings = collaborators.endings
        self._registry = collaborators.registry
        self._streams = collaborators.streams
        self._metrics = collaborators.metrics
        self._usage_models = collaborators.usage_models
        self._turn_timeout = turn_timeout

    async def handle(self, cmd: TurnCommand) -> AsyncGenerator[chunks.Chunk, None]:
        """Run one turn. Raises DomainError before TurnStarted; afterwards every failure is
        an Error chunk and TurnCompleted. A retry (same client_message_id, same input)
        streams the original turn instead."""
        await self._validator.validate(cmd)
        async with self._uow_factory(cmd.tenant_id) as uow:
            # 1-2. Claim the session and record the input (not committed yet).
            opened = await self._opener.open(uow, cmd)
            if isinstance(opened, Replay):
                await uow.rollback()  # nothing to keep: hold no lock while following
                turn_id, session_id = opened.turn.turn_id, opened.turn.session_id
                replay = self._streams.follow(session_id, turn_id, 0, tenant_id=cmd.tenant_id)
                async with aclosing(replay) as replayed:
                    async for chunk in replayed:
                        yield chunk
                return
            # Registered before COMMIT #1: a retry that finds the turn committed follows it.
            live = self._registry.open(
                opened.session.session_id, opened.turn.turn_id, tenant_id=cmd.tenant_id
            )
            started = time.monotonic()
            try:
                async with aclosing(self._run(uow, opened, live)) as run:
                    async for chunk in run:
                        live.publish(chunk)
                        live.waiting_to_send = True  # a client that reads nothing waits here
                        yield chunk
                        live.waiting_to_send = False
            finally:
                self._registry.close(live)
                if opened.persisted:
                    self._turn_ended(opened, time.monotonic() - started, cmd.tenant_id)

    async def _run(
        self, uow: UnitOfWork, turn: TurnRecorder, live: LiveTurn
    ) -> AsyncGenerator[chunks.Chunk, None]:
        """COMMIT #1 and all that follows it."""
        live.attach(asyncio.current_task(), self._turn_timeout)
        try:
            await self._commit(uow, turn)  # COMMIT #1: the input is durable.
            for chunk in turn.chunks_to_send():  # TurnStarted (and the end, if no model runs)
                yield chunk
            if turn.agent.routes and not turn.finished:
                await self._router.route(turn, live)  # the orchestrator picks an agent
                await self._commit(uow, turn)
                for chunk in turn.chunks_to_send():  # AgentSwitched
                    yield chunk
            while not turn.finished:
                # 3. The model step: its text streams out as it comes.
                response: ModelResponse | None = None
                request = self._model.answer_request(turn, live)
                async with aclosing(self._model.stream(turn, live, request)) as events:
                    async for event in events:
                        if isinstance(event, ModelResponse):
                            response = event
                        elif (delta := self._model.delta(turn, event)) is not None:
                            yield turn.chunk(delta)  # text, reasoning, a call's arguments
                assert response is not None  # stream() raises without one
                # 4-5. The domain decides what the answer means; record it.
                await self._answers.record(uow, turn, response)
                # COMMIT #2: the answer or tool call is durable, and the turn over. Or, when
                # the model is to be called again (a refused tool call, switch_mode), a
                # commit of what it will read.
                await self._commit(uow, turn)
                for chunk in turn.chunks_to_send():  # AssistantMessage | ToolCall, TurnCompleted
                    yield chunk
            return
        except (Exception, asyncio.CancelledError, GeneratorExit) as stopped:
            if not turn.persisted or turn.durably_finished:
                raise  # before COMMIT #1 (the client gets a status), or after the end
            ending = await self._ending(uow, turn, live, stopped)
            if not isinstance(stopped, Exception):
                raise  # the client is gone; the followers got the ending
        for chunk in ending:  # Error and TurnCompleted, or TurnCompleted{CANCELLED}
            yield chunk

    async def _commit(self, uow: UnitOfWork, turn: TurnRecorder) -> None:
        """Write the turn's row with its replay log and the session's activity, and commit.
        The recorder learns that the commit landed even if the client goes away meanwhile."""
        await turn.save()
        await uow.commit(on_committed=turn.committed)

    async def _ending(
        self, uow: UnitOfWork, turn: TurnRecorder, live: LiveTurn, stopped: BaseException
    ) -> list[chunks.Chunk]:
        """Record and commit how the turn ended, through the RPC's own unit of work, to the
        end even if the client goes away meanwhile (then the followers get the chunks that
        end the stream; else the caller sends them). If the database refuses, the chunks
        still go out, and the lease keeper reclaims the turn once the database is back."""
        ending: list[chunks.Chunk] = []

        async def record() -> None:
            try:
                await self._endings.record(turn, live, stopped)
                await self._commit(uow, turn)
            except DomainError as exc:
                log.error(
                    "turn %s: could not record its end (%s: %s); if it still runs in the "
                    "database, the lease keeper will reclaim it",
                    turn.turn.turn_id,
                    exc.reason,
                    exc.message,
                )
                with contextlib.suppress(DomainError):
                    await uow.rollback()  # hold no lock while the chunks wait to be read
            ending.extend(turn.chunks_to_send())

        try:
            await run_to_completion(record())
        except asyncio.CancelledError:
            _publish(live, ending)
            raise
        if not isinstance(stopped, Exception):
            _publish(live, ending)
        return ending

    def _turn_ended(self, turn: TurnRecorder, seconds: float, tenant_id: str) -> None:
        stop = turn.turn.stop_reason
        outcome = stop.name if stop is not None else "UNFINISHED"
        self._metrics.turn_finished(outcome, seconds)
        usage = turn.turn.usage
        # What the database counted, as it counted it: once. A turn with no tokens adds
        # nothing, not even a series.
        if turn.usage_counted and usage.total_tokens:
            model = self._usage_models.label(turn.turn.model)
            self._metrics.usage_counted(
                tenant_id, model, usage.prompt_tokens, usage.completion_tokens
            )
        log.info(
            "turn %s ended: %s after %.3fs (tokens in %d, out %d)",
            turn.turn.turn_id,
            outcome,
            seconds,
            turn.usage.prompt_tokens,
            turn.usage.completion_tokens,
        )


def _publish(live: LiveTurn, ending: list[chunks.Chunk]) -> None:
    for chunk in ending:
        live.publish(chunk)
