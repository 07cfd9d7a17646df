"""TurnHandler: one input in, one turn's chunks out, every final chunk after its commit.

The unit of work belongs to the RPC: it is opened here, inside the streaming call, and
closed when the stream ends, however it ends. No transaction is open while the model
streams, so a slow model never holds a database lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent_runtime.application import log_context
from agent_runtime.application.chunk_relay import ChunkRelay
from agent_runtime.application.commands import (
    DecideApproval,
    SendUserMessage,
    SubmitToolResult,
    TurnCommand,
)
from agent_runtime.application.context_window import fit_context_window
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.live_turns import LiveTurn, LiveTurns
from agent_runtime.application.metrics import NoMetrics, RuntimeMetrics
from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.application.ports import (
    ChatRequest,
    EventSignal,
    LLMClient,
    UnitOfWork,
    UnitOfWorkFactory,
)
from agent_runtime.application.turn_inputs import TurnInputs
from agent_runtime.application.turn_state import TurnState
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.application.turn_validation import TurnValidator, fingerprint
from agent_runtime.application.turn_writer import TurnWriter, call_ms
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.errors import (
    DomainError,
    InternalError,
    InvalidInput,
    ModelError,
    ModelProtocolError,
    ModelTimeout,
    NotFound,
    PreconditionFailed,
    SessionBusy,
    WriteConflict,
)
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import (
    Approval,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    TurnError,
    Usage,
    validate_id,
    validate_session_id,
)
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.domain.response_processor import (
    FinalAnswer,
    InvalidAnswer,
    LLMResponseProcessor,
    RejectedToolCall,
    ToolCallDecision,
)
from agent_runtime.domain.routing import (
    RoutingDecision,
    classification_prompt,
    parse_routing_answer,
    route_by_keywords,
)
from agent_runtime.domain.tool_filter import ToolFilterService

log = logging.getLogger(__name__)

SWITCH_MODE_TOOL = "switch_mode"

_CallDecision = ToolCallDecision | RejectedToolCall


@dataclass(frozen=True, slots=True)
class TurnSettings:
    default_model: str
    # Messages sent to the model at most (oldest dropped first); bounds per-turn cost.
    context_window_messages: int = 200
    max_message_bytes: int = 256 * 1024
    # Model calls one turn may make (tool-error retries, reject-then-continue, switch_mode).
    max_iterations: int = 8
    approval_ttl: timedelta = timedelta(minutes=10)
    # The longest a turn may run; None: no limit beyond the model client's own timeouts.
    turn_timeout: float | None = 900.0
    # Who runs the turns of this process, and how long a turn's claim lasts unrenewed.
    owner: str = "local"
    lease: timedelta = timedelta(seconds=30)


# A concurrent request can insert the same session or idempotency key first (PostgreSQL runs
# transactions side by side; SQLite queues them). Starting over then reads what it wrote.
_BEGIN_ATTEMPTS = 3


class _Replay(Exception):
    """The input is a retry of a turn that exists already: follow that turn instead."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn


class _Interrupted(Exception):
    """CancelTurn or the turn's deadline stopped a model call."""


class TurnHandler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        llm: LLMClient,
        agents: AgentCatalogue,
        settings: TurnSettings,
        *,
        live: LiveTurns | None = None,
        commits: EventSignal | None = None,
        relay: ChunkRelay | None = None,
        metrics: RuntimeMetrics | None = None,
        tool_filter: ToolFilterService | None = None,
        clock: Clock = utc_now,
        ids: IdFactory = new_id,
    ) -> None:
        self._uow_factory = uow_factory
        self._llm = llm
        self._agents = agents
        self._settings = settings
        self._tools = tool_filter or ToolFilterService()
        self._processor = LLMResponseProcessor(self._tools)
        self._now = clock
        self._ids = ids
        self.live = live if live is not None else LiveTurns()
        self._metrics = metrics or NoMetrics()
        self.streams = TurnStreams(uow_factory, self.live, commits=commits, relay=relay)
        self._validator = TurnValidator(agents, settings.max_message_bytes)
        self._writer = TurnWriter(uow_factory, clock, ids, settings.default_model)
        self._inputs = TurnInputs(self._writer, agents, self._tools, clock)

    async def handle(self, cmd: TurnCommand) -> AsyncGenerator[chunks.Chunk, None]:
        """Run one turn. Raises DomainError before TurnStarted; afterwards failures are chunks.

        A retry (same client_message_id, same input) streams the original turn instead.
        """
        self._validator.validate(cmd)
        started = time.monotonic()
        duplicate: Turn | None = None
        live: LiveTurn | None = None
        state: TurnState | None = None
        try:
            async with self._uow_factory(cmd.tenant_id) as uow:
                try:
                    state, live, first = await self._begin_retrying(uow, cmd)
                except _Replay as replay:
                    duplicate = replay.turn
                    log_context.bind(session_id=duplicate.session_id, turn_id=duplicate.turn_id)
                else:
                    async with aclosing(self._run(uow, state, live, first)) as stream:
                        async for chunk in stream:
                            yield chunk
            if duplicate is not None:
                stream = self.streams.follow(
                    duplicate.session_id, duplicate.turn_id, 0, tenant_id=cmd.tenant_id
                )
                async with aclosing(stream) as replayed:
                    async for chunk in replayed:
                        yield chunk
        finally:
            if live is not None:
                self.live.close(live)
            if state is not None:
                self._turn_ended(state, time.monotonic() - started)

    def _turn_ended(self, state: TurnState, seconds: float) -> None:
        stop = state.turn.stop_reason
        outcome = stop.name if stop is not None else "UNFINISHED"
        self._metrics.turn_finished(outcome, seconds)
        usage = state.usage
        log.info(
            "turn %s ended: %s after %.3fs (tokens in %d, out %d)",
            state.turn.turn_id,
            outcome,
            seconds,
            usage.prompt_tokens,
            usage.completion_tokens,
        )

    async def cancel(self, session_id: str, turn_id: str, *, tenant_id: str) -> None:
        """CancelTurn: stop a running turn, here or in the process that runs it."""
        validate_session_id(session_id)
        live = self.live.get(turn_id)
        validate_id("turn_id", turn_id)
        if live is not None and live.session_id == session_id and live.tenant_id == tenant_id:
            live.cancel()
            return
        async with self._uow_factory(tenant_id) as uow:
            turn = await uow.turns.get(turn_id)
            if turn is None or turn.session_id != session_id:
                raise NotFound(
                    f"turn {turn_id} not found in session {session_id}",
                    reason="TURN_NOT_FOUND",
                    metadata={"turn_id": turn_id},
                )
            if not turn.running:
                raise PreconditionFailed(
                    f"turn {turn_id} is not running ({turn.status.value})",
                    reason="TURN_NOT_RUNNING",
                    metadata={"turn_id": turn_id, "status": turn.status.value},
                )
            await uow.turns.request_cancel(turn_id)  # its owner acts on its next lease renewal
            await uow.commit()

    def _sent(self, state: TurnState, live: LiveTurn, chunk: chunks.Chunk) -> chunks.Chunk:
        state.sent(chunk)
        live.publish(chunk)
        return chunk

    async def _run(
        self, uow: UnitOfWork, state: TurnState, live: LiveTurn, first: list[chunks.Chunk]
    ) -> AsyncGenerator[chunks.Chunk, None]:
        """The committed first chunks, then the model part of the turn. A client that goes
        away, even while TurnStarted is on its way, cancels the turn cleanly."""
        live.attach(asyncio.current_task(), self._settings.turn_timeout)
        early = self._early_model_call(state, live)
        try:
            for chunk in first:
                yield self._sent(state, live, chunk)
            if not state.finished:
                async with aclosing(self._model_loop(uow, state, live, early)) as stream:
                    async for chunk in stream:
                        yield self._sent(state, live, chunk)
        except (asyncio.CancelledError, GeneratorExit):
            if early is not None:
                await self._abandon(early)  # before recording the end, which may wait
            if not state.finished:
                await uow.rollback()
                state.restore()
                ending = await asyncio.shield(self._record_cancelled(state))
                for chunk in ending:  # the client is gone; followers still hear the end
                    live.publish(chunk)
            raise
        finally:
            if early is not None:
                await self._abandon(early)  # nothing to do unless the model loop never took it

    def _early_model_call(self, state: TurnState, live: LiveTurn) -> ModelReadAhead | None:
        """The turn's first model call, sent now, while the first chunks are written.

        COMMIT #1 has landed (the input is durable), so the model may be called; sending
        its request before TurnStarted is written lets the two travel together (0.1-0.4 ms
        less to the first token at c=1, docs/benchmarks/README.md). None when the
        turn's first call is not the plain one (routing) or there is none.
        """
        if (
            state.finished
            or state.agent.routes
            or live.stop_requested
            or self._settings.max_iterations < 1
        ):
            return None
        return self._ask(self._chat_request(state)).start()

    async def _abandon(self, call: ModelReadAhead) -> None:
        """Closes a model call that was sent but that no one read, and counts it cancelled."""
        if call.started_at is None or call.entered or call.closed:
            return  # never sent, or _call_model owns it
        await call.close()
        self._metrics.model_call_finished("cancelled", time.monotonic() - call.started_at)

    # -- COMMIT #1: claim the session, record the input -------------------------------------

    async def _begin_retrying(
        self, uow: UnitOfWork, cmd: TurnCommand
    ) -> tuple[TurnState, LiveTurn, list[chunks.Chunk]]:
        for attempt in range(1, _BEGIN_ATTEMPTS + 1):
            try:
                return await self._begin(uow, cmd)  # COMMIT #1 inside
            except WriteConflict:
                if attempt == _BEGIN_ATTEMPTS:
                    raise
                await uow.rollback()
        raise AssertionError("unreachable")

    async def _begin(
        self, uow: UnitOfWork, cmd: TurnCommand
    ) -> tuple[TurnState, LiveTurn, list[chunks.Chunk]]:
        now = self._now()
        turn_id = self._ids("turn")
        session_id = cmd.session_id or self._ids("ses")
        log_context.bind(session_id=session_id, turn_id=turn_id)
        session = await uow.sessions.get(session_id)
        if session is not None and session.deleted_at is not None:
            raise _session_not_found(session_id)
        history = []
        if session is None:
            if isinstance(cmd, SubmitToolResult | DecideApproval):
                raise _session_not_found(session_id)
            agent_name = cmd.agent if isinstance(cmd, SendUserMessage) else ""
            session = Session(
                session_id,
                self._agents.get(agent_name).name,
                created_at=now,
                last_activity_at=now,
                running_turn_id=turn_id,
            )
            await uow.sessions.add(session)
        else:
            if cmd.client_message_id:
                await self._check_duplicate(uow, session_id, cmd)
            running = await uow.sessions.claim_turn(session_id, turn_id)
            if running is not None:
                if cmd.client_message_id:
                    # On PostgreSQL the claim waited for the running turn to commit, after the
                    # check above: that turn may be the one this retry is looking for.
                    await self._check_duplicate(uow, session_id, cmd)
                raise SessionBusy(
                    f"session {session_id} is running turn {running}",
                    metadata={"session_id": session_id, "turn_id": running},
                )
            history = await uow.messages.recent(session_id, self._settings.context_window_messages)

        override = cmd.agent if isinstance(cmd, SendUserMessage) else ""
        requested_model = getattr(cmd, "model", "")
        agent = self._agents.get(override or session.agent)
        turn = Turn(
            turn_id,
            session_id,
            agent=agent.name,
            model=self._writer.model_for(agent, requested_model),
            started_at=now,
            client_message_id=cmd.client_message_id or None,
            # Compared only when a retry carries the same idempotency key.
            input_hash=fingerprint(cmd) if cmd.client_message_id else None,
            owner=self._settings.owner,
            lease_expires_at=now + self._settings.lease,
        )
        state = TurnState(
            session, turn, agent, history, model_override=requested_model, tenant_id=cmd.tenant_id
        )
        # Registered before the commit: a retry that sees the committed turn finds it live.
        live = self.live.open(session_id, turn_id, tenant_id=cmd.tenant_id)
        try:
            await self._writer.event(uow, state, EventType.TURN_STARTED, input=_input_kind(cmd))
            opening = await self._inputs.open(uow, state, cmd)
            turn.input_message_id = opening.input_message_id or None
            first = [state.chunk(chunks.TurnStarted(agent.name, opening.input_message_id))]
            first += [state.chunk(body) for body in opening.chunks]
            await uow.turns.add(turn, state.log)  # with its replay log: one statement
            state.log_written()
            if opening.run_model:
                await self._writer.commit(uow, state, model_call_next=True)
            else:
                first += await self._writer.finish(uow, state, opening.stop_reason)
        except BaseException:
            self.live.close(live)
            raise
        return state, live, first

    async def _check_duplicate(self, uow: UnitOfWork, session_id: str, cmd: TurnCommand) -> None:
        existing = await uow.turns.find_by_client_message_id(session_id, cmd.client_message_id)
        if existing is None:
            return
        if existing.input_hash != fingerprint(cmd):
            raise InvalidInput.field(
                "client_message_id",
                f"was already used in this session for a different input (turn {existing.turn_id})",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        raise _Replay(existing)

    # -- the model calls and COMMIT #2 -----------------------------------------------------

    async def _model_loop(
        self,
        uow: UnitOfWork,
        state: TurnState,
        live: LiveTurn,
        early: ModelReadAhead | None = None,
    ) -> AsyncGenerator[chunks.Chunk, None]:
        """`early`: the first call, already sent (see _early_model_call)."""
        try:
            if state.agent.routes:
                yield await self._route(uow, state, live)
            calls = 0
            while True:
                if calls == self._settings.max_iterations:
                    for chunk in await self._writer.finish(uow, state, StopReason.MAX_ITERATIONS):
                        yield chunk
                    return
                calls += 1
                response = None
                call, early = early or self._ask(self._chat_request(state)), None
                stream = self._call_model(state, live, call)
                async with aclosing(stream) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            yield state.chunk(chunks.AssistantDelta(event.text))
                        else:
                            response = event
                assert response is not None
                to_send, done = await self._act_on(uow, state, response)
                for chunk in to_send:  # already committed
                    yield chunk
                if done:
                    return
        except _Interrupted:
            async with aclosing(self._interrupted(uow, state, live)) as ending:
                async for chunk in ending:
                    yield chunk
        except DomainError as error:
            for chunk in await self._fail(uow, state, error):
                yield chunk
        except Exception as exc:  # a bug: record it, tell the client an id, never the details
            error_id = self._ids("err")
            log.exception(
                "turn %s failed unexpectedly (error id %s)",
                state.turn.turn_id,
                error_id,
                exc_info=exc,
                extra={"error_id": error_id},
            )
            internal = InternalError(
                f"internal error (error id {error_id})", metadata={"error_id": error_id}
            )
            for chunk in await self._fail(uow, state, internal):
                yield chunk

    def _chat_request(self, state: TurnState) -> ChatRequest:
        return ChatRequest(
            model=state.turn.model,
            system_prompt=state.agent.system_prompt,
            history=fit_context_window(state.history, self._settings.context_window_messages),
            tools=self._tools.tools_for(state.agent),
        )

    def _ask(self, request: ChatRequest) -> ModelReadAhead:
        """A model call, not sent yet. Read ahead: deltas that arrive while this turn is busy
        become one delta."""
        return ModelReadAhead(self._llm.stream_chat(request))

    async def _call_model(
        self, state: TurnState, live: LiveTurn, call: ModelReadAhead, *, visible: bool = True
    ) -> AsyncGenerator[ModelEvent, None]:
        """One model call (sent now, unless sent already): deltas as they come, then the
        response (usage added to the turn).

        `visible`: the text is the assistant's answer (kept as partial text on cancel).
        """
        if live.stop_requested:
            await self._abandon(call)  # sent early, while TurnStarted was being written
            raise _Interrupted
        state.partial_text.clear()
        call.start()
        started = state.model_call_started = call.started_at or time.monotonic()
        response = None
        outcome = "error"
        waiting_for_output = True
        try:
            # Leaving the block (the client gone, CancelTurn) closes the model request at once.
            async with call as ahead:
                while (event := await _read(ahead, live)) is not None:
                    if waiting_for_output:
                        waiting_for_output = False
                        # When it arrived: an early call's output may wait for TurnStarted.
                        arrived = ahead.first_event_at or time.monotonic()
                        self._metrics.model_first_token(arrived - started)
                    if isinstance(event, TextDelta):
                        if visible:
                            state.partial_text.append(event.text)
                    else:
                        response = event
                    yield event
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit, _Interrupted):
            outcome = "cancelled"
            raise
        finally:
            self._metrics.model_call_finished(outcome, time.monotonic() - started)
        if response is None:
            raise ModelProtocolError("the model stream ended without a final response")
        usage = response.usage or Usage()
        self._metrics.tokens_used(usage.prompt_tokens, usage.completion_tokens)
        state.usage = state.usage + usage

    async def _model_done(self, uow: UnitOfWork, state: TurnState, response: ModelResponse) -> None:
        usage = response.usage or Usage()
        state.model_outcome = {
            "model": state.turn.model,
            "duration_ms": call_ms(state),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": response.finish_reason or "",
        }
        await self._writer.event(
            uow, state, EventType.MODEL_REQUEST_COMPLETED, **state.model_outcome
        )
        state.model_call_started = None
        state.partial_text.clear()

    async def _act_on(
        self, uow: UnitOfWork, state: TurnState, response: ModelResponse
    ) -> tuple[list[chunks.Chunk], bool]:
        """Record what the answer means: the chunks to send, and whether the turn is over."""
        decision = self._processor.process(response, state.agent)
        if isinstance(decision, InvalidAnswer):
            raise ModelProtocolError(decision.message, reason=decision.reason)
        await self._model_done(uow, state, response)

        if isinstance(decision, FinalAnswer):
            message = await self._writer.append(uow, state, Role.ASSISTANT, decision.content)
            answer = chunks.AssistantMessage(message.message_id, message.content)
            return await self._writer.finish(uow, state, StopReason.END_TURN, [answer]), True

        decision = await self._unique_call_id(uow, state, decision)
        message = await self._writer.append(
            uow, state, Role.ASSISTANT, decision.content, tool_calls=(decision.call,)
        )
        if decision.dropped_calls:
            log.info(
                "turn %s: kept the first of %d tool calls",
                state.turn.turn_id,
                decision.dropped_calls + 1,
            )

        if isinstance(decision, RejectedToolCall):
            # Never sent to the client: the model reads why and may try again.
            await self._writer.append(
                uow,
                state,
                Role.TOOL,
                decision.tool_error(),
                tool_call_id=decision.call.call_id,
                is_error=True,
            )
            await self._writer.commit(uow, state, model_call_next=True)
            return [], False

        call = decision.call
        if call.tool_name == SWITCH_MODE_TOOL:
            return await self._run_switch_mode(uow, state, call), False

        if decision.requires_approval:
            approval = Approval.open(
                self._ids("apr"),
                state.session.session_id,
                message.message_id,
                state.turn.turn_id,
                call,
                decision.approval_reason,
                self._now(),
                self._settings.approval_ttl,
            )
            await uow.approvals.add(approval)
            await self._writer.event(
                uow,
                state,
                EventType.APPROVAL_REQUIRED,
                call_id=call.call_id,
                tool_name=call.tool_name,
                expires_at=approval.expires_at.isoformat(),
            )
            stop = StopReason.AWAITING_APPROVAL
        else:
            await self._writer.event(
                uow,
                state,
                EventType.TOOL_EXECUTION_REQUESTED,
                call_id=call.call_id,
                tool_name=call.tool_name,
            )
            stop = StopReason.TOOL_CALL
        body = chunks.ToolCall(
            message.message_id,
            call.call_id,
            call.tool_name,
            call.arguments,
            decision.requires_approval,
            decision.approval_reason,
        )
        return await self._writer.finish(uow, state, stop, [body]), True

    async def _unique_call_id(
        self, uow: UnitOfWork, state: TurnState, decision: _CallDecision
    ) -> _CallDecision:
        """Give the call an id of our own if the model reused one this session already has.

        Clients answer by call id, so ids must be unique per session; some servers count
        from call_0 in every response.
        """
        call = decision.call
        if await uow.messages.find_tool_call(state.session.session_id, call.call_id) is None:
            return decision
        unique = ToolCallRecord(self._ids("call"), call.tool_name, call.arguments)
        return dataclasses.replace(decision, call=unique)

    async def _run_switch_mode(
        self, uow: UnitOfWork, state: TurnState, call: ToolCallRecord
    ) -> list[chunks.Chunk]:
        """The runtime's own tool: switch agent, tell the model, let the new agent go on."""
        mode = str(call.arguments.get("mode", ""))
        target = self._agents.profiles.get(mode)
        if target is None or target.routes:
            known = ", ".join(p.name for p in self._agents.specialists())
            await self._writer.append(
                uow,
                state,
                Role.TOOL,
                f"Unknown mode '{mode}'. Known: {known}",
                tool_call_id=call.call_id,
                is_error=True,
            )
            await self._writer.commit(uow, state, model_call_next=True)
            return []
        switched = await self._writer.switch_agent(
            uow, state, target, str(call.arguments.get("reason", ""))
        )
        await self._writer.append(
            uow, state, Role.TOOL, f"Switched to agent '{target.name}'.", tool_call_id=call.call_id
        )
        chunk = state.chunk(switched)
        await self._writer.commit(uow, state, model_call_next=True)
        return [chunk]

    async def _route(self, uow: UnitOfWork, state: TurnState, live: LiveTurn) -> chunks.Chunk:
        """The orchestrator: one classification call, then keyword rules, then the fallback."""
        question = next((m for m in reversed(state.history) if m.role is Role.USER), None)
        request = ChatRequest(
            model=state.turn.model,
            system_prompt=classification_prompt(self._agents),
            history=[question] if question else [],
            tools=[],
        )
        decision: RoutingDecision | None = None
        try:
            stream = self._call_model(state, live, self._ask(request), visible=False)
            async with aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, ModelResponse):
                        await self._model_done(uow, state, event)
                        decision = parse_routing_answer(event.content, self._agents)
        except ModelError as error:
            log.warning(
                "turn %s: routing call failed (%s); using keyword rules",
                state.turn.turn_id,
                error.reason,
            )
            await self._writer.event(
                uow,
                state,
                EventType.MODEL_REQUEST_FAILED,
                reason=error.reason,
                duration_ms=call_ms(state),
            )
            state.model_call_started = None
        if decision is None:
            decision = route_by_keywords(question.content if question else "", self._agents)
        reason = f"routed by {decision.method.value} (confidence {decision.confidence:.2f})"
        if decision.reason:
            reason += f": {decision.reason}"
        switched = await self._writer.switch_agent(
            uow, state, self._agents.get(decision.agent), reason
        )
        chunk = state.chunk(switched)
        await self._writer.commit(uow, state, model_call_next=True)
        return chunk

    # -- abnormal endings ---------------------------------------------------------------------

    async def _fail(
        self, uow: UnitOfWork, state: TurnState, error: DomainError
    ) -> list[chunks.Chunk]:
        with contextlib.suppress(DomainError):  # a broken database may refuse even this
            await uow.rollback()
        state.restore()
        state.turn.fail(TurnError(error.reason, error.message), state.usage, self._now())
        return await self._end(
            state,
            EventType.TURN_FAILED,
            error.reason,
            [chunks.TurnError(error), chunks.TurnCompleted(StopReason.ERROR, state.usage)],
            reason=error.reason,
            message=error.message,
        )

    async def _end(
        self,
        state: TurnState,
        type_: EventType,
        model_reason: str,
        final: list[chunks.ChunkBody],
        *,
        keep_partial: bool = False,
        **data: Any,
    ) -> list[chunks.Chunk]:
        """Record how the turn ended. If the database refuses even that, the client still
        gets the ending chunks; the turn is reclaimed once the database is back."""
        try:
            return await self._writer.record_ending(
                state, type_, model_reason, final, keep_partial=keep_partial, **data
            )
        except DomainError as exc:
            log.error(
                "turn %s: could not record its end (%s); the lease keeper will reclaim it",
                state.turn.turn_id,
                exc.reason,
            )
            state.restore()
            return [state.chunk(body) for body in final]

    async def _interrupted(
        self, uow: UnitOfWork, state: TurnState, live: LiveTurn
    ) -> AsyncGenerator[chunks.Chunk, None]:
        if live.cancel_requested:
            await uow.rollback()
            state.restore()
            for chunk in await self._record_cancelled(state):
                yield chunk
            return
        timeout = ModelTimeout(
            f"the turn ran longer than {self._settings.turn_timeout:g}s", reason="TURN_TIMEOUT"
        )
        for chunk in await self._fail(uow, state, timeout):
            yield chunk

    async def _record_cancelled(self, state: TurnState) -> list[chunks.Chunk]:
        state.turn.cancel(state.usage, self._now())
        return await self._end(
            state,
            EventType.TURN_CANCELLED,
            "CANCELLED",
            [chunks.TurnCompleted(StopReason.CANCELLED, state.usage)],
            keep_partial=True,
        )


async def _read(ahead: ModelReadAhead, live: LiveTurn) -> ModelEvent | None:
    """The model's next event (None at the end), interruptible by CancelTurn or the deadline.

    Only here may LiveTurn cancel the task: the task is then waiting for the model, never
    committing or sending.
    """
    live.in_model_read = True
    try:
        return await ahead.next()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        # Our own interrupt, and nobody else cancelled the task too (a client going away).
        if live.stop_requested and task is not None and task.uncancel() == 0:
            raise _Interrupted from None
        raise
    finally:
        live.in_model_read = False


def _input_kind(cmd: TurnCommand) -> str:
    match cmd:
        case SendUserMessage():
            return "user_message"
        case SubmitToolResult():
            return "tool_result"
        case DecideApproval():
            return "approval_decision"
        case _:
            return "switch_agent"


def _session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id} not found",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )
