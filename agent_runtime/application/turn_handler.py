"""TurnHandler: one input in, one turn's chunks out, with the turn's two commit points.

The unit of work belongs to the RPC: it is opened here, inside the streaming call, and
closed when the stream ends, however it ends. No transaction is open while the model
streams, so a slow model never holds a database lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.context_window import fit_context_window
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.ports import ChatRequest, LLMClient, UnitOfWork, UnitOfWorkFactory
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue, AgentProfile
from agent_runtime.domain.errors import (
    DomainError,
    InternalError,
    InvalidInput,
    ModelProtocolError,
    SessionBusy,
)
from agent_runtime.domain.model import (
    Message,
    Role,
    Session,
    StopReason,
    Turn,
    TurnError,
    Usage,
    validate_session_id,
)
from agent_runtime.domain.model_output import ModelResponse, TextDelta
from agent_runtime.domain.response_processor import (
    FinalAnswer,
    InvalidAnswer,
    LLMResponseProcessor,
    ToolCallDecision,
)
from agent_runtime.domain.tool_filter import ToolFilterService

log = logging.getLogger(__name__)

SUPERSEDED_TOOL_RESULT = "not executed: superseded by a new message"


@dataclass(frozen=True, slots=True)
class TurnSettings:
    default_model: str
    # Messages sent to the model at most (oldest dropped first); bounds per-turn cost.
    context_window_messages: int = 200
    max_message_bytes: int = 256 * 1024


@dataclass(slots=True)
class _TurnRun:
    """What one running turn knows between its two commits."""

    session: Session
    turn: Turn
    agent: AgentProfile
    history: list[Message]
    next_seq: int = 1
    committed_final: bool = False
    usage: Usage = field(default_factory=Usage)
    partial_text: list[str] = field(default_factory=list)

    def chunk(self, body: chunks.ChunkBody) -> chunks.Chunk:
        seq = self.next_seq
        self.next_seq += 1
        return chunks.Chunk(self.session.session_id, self.turn.turn_id, seq, body)


class TurnHandler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        llm: LLMClient,
        agents: AgentCatalogue,
        settings: TurnSettings,
        *,
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

    async def handle(self, cmd: SendUserMessage) -> AsyncGenerator[chunks.Chunk, None]:
        """Run one turn. Raises DomainError before TurnStarted; afterwards failures are chunks."""
        self._validate(cmd)
        async with self._uow_factory() as uow:
            run = await self._start_turn(uow, cmd)  # COMMIT #1 happens inside
            yield run.chunk(chunks.TurnStarted(run.agent.name, run.turn.input_message_id or ""))
            try:
                async with aclosing(self._run_model(uow, run)) as stream:
                    async for chunk in stream:
                        yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                if not run.committed_final:
                    await uow.rollback()
                    await asyncio.shield(self._record_cancelled(run))
                raise

    # -- validation and COMMIT #1 ------------------------------------------------------------

    def _validate(self, cmd: SendUserMessage) -> None:
        if cmd.session_id:
            validate_session_id(cmd.session_id)
        if not cmd.content.strip():
            raise InvalidInput.field(
                "user_message.content", "must not be empty", reason="EMPTY_MESSAGE"
            )
        size = len(cmd.content.encode())
        if size > self._settings.max_message_bytes:
            raise InvalidInput.field(
                "user_message.content",
                f"is {size} bytes; the limit is {self._settings.max_message_bytes}",
                reason="MESSAGE_TOO_LARGE",
            )
        if cmd.agent:
            self._agents.get(cmd.agent)  # unknown agent -> InvalidInput

    async def _start_turn(self, uow: UnitOfWork, cmd: SendUserMessage) -> _TurnRun:
        now = self._now()
        turn_id = self._ids("turn")
        session_id = cmd.session_id or self._ids("ses")
        session = await uow.sessions.get(session_id)
        if session is None:
            agent = self._agents.get(cmd.agent)
            session = Session(
                session_id,
                agent.name,
                created_at=now,
                last_activity_at=now,
                running_turn_id=turn_id,
            )
            await uow.sessions.add(session)
            history: list[Message] = []
        else:
            agent = self._agents.get(cmd.agent or session.agent)
            running = await uow.sessions.claim_turn(session_id, turn_id)
            if running is not None:
                raise SessionBusy(
                    f"session {session_id} is running turn {running}",
                    metadata={"session_id": session_id, "turn_id": running},
                )
            history = await uow.messages.recent(session_id, self._settings.context_window_messages)

        new_messages = self._close_dangling_tool_calls(session, history, turn_id)
        user_message = Message(
            self._ids("msg"),
            session_id,
            session.next_position(),
            Role.USER,
            cmd.content,
            created_at=now,
            turn_id=turn_id,
        )
        new_messages.append(user_message)
        turn = Turn(
            turn_id,
            session_id,
            agent=agent.name,
            model=cmd.model or agent.model or self._settings.default_model,
            started_at=now,
            input_message_id=user_message.message_id,
            client_message_id=cmd.client_message_id or None,
        )
        await uow.turns.add(turn)
        for message in new_messages:
            await uow.messages.add(message)
        session.last_activity_at = now
        await uow.sessions.record_activity(session_id, now, message_count=session.message_count)
        await uow.commit()  # COMMIT #1: the input is durable before anyone hears of the turn

        history.extend(new_messages)
        return _TurnRun(session, turn, agent, history)

    def _close_dangling_tool_calls(
        self, session: Session, history: list[Message], turn_id: str
    ) -> list[Message]:
        """Answer an unanswered tool call so the history stays valid for the provider."""
        if not history or history[-1].role is not Role.ASSISTANT or not history[-1].tool_calls:
            return []
        return [
            Message(
                self._ids("msg"),
                session.session_id,
                session.next_position(),
                Role.TOOL,
                SUPERSEDED_TOOL_RESULT,
                created_at=self._now(),
                turn_id=turn_id,
                tool_call_id=call.call_id,
            )
            for call in history[-1].tool_calls
        ]

    # -- the model call and COMMIT #2 ------------------------------------------------------

    async def _run_model(
        self, uow: UnitOfWork, run: _TurnRun
    ) -> AsyncGenerator[chunks.Chunk, None]:
        try:
            response = None
            request = ChatRequest(
                model=run.turn.model,
                system_prompt=run.agent.system_prompt,
                history=fit_context_window(run.history, self._settings.context_window_messages),
                tools=self._tools.tools_for(run.agent),
            )
            # aclosing: when the client goes away mid-stream, the model request is closed now.
            async with aclosing(self._llm.stream_chat(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        run.partial_text.append(event.text)
                        yield run.chunk(chunks.AssistantDelta(event.text))
                    else:
                        response = event
            if response is None:
                raise ModelProtocolError("the model stream ended without a final response")
            final = await self._commit_answer(uow, run, response)  # COMMIT #2
        except DomainError as error:
            async for chunk in self._fail(uow, run, error):
                yield chunk
            return
        except Exception as exc:  # a bug: record it, tell the client an id, never the details
            error_id = self._ids("err")
            log.exception(
                "turn %s failed unexpectedly (error id %s)",
                run.turn.turn_id,
                error_id,
                exc_info=exc,
            )
            internal = InternalError(
                f"internal error (error id {error_id})", metadata={"error_id": error_id}
            )
            async for chunk in self._fail(uow, run, internal):
                yield chunk
            return
        yield run.chunk(final)
        yield run.chunk(
            chunks.TurnCompleted(run.turn.stop_reason or StopReason.END_TURN, run.usage)
        )

    async def _commit_answer(
        self, uow: UnitOfWork, run: _TurnRun, response: ModelResponse
    ) -> chunks.AssistantMessage | chunks.ToolCall:
        run.usage = response.usage or Usage()
        decision = self._processor.process(response, run.agent)
        if isinstance(decision, InvalidAnswer):
            raise ModelProtocolError(decision.message, reason=decision.reason)

        now = self._now()
        session = run.session
        position = session.message_count + 1
        body: chunks.AssistantMessage | chunks.ToolCall
        if isinstance(decision, FinalAnswer):
            message = Message(
                self._ids("msg"),
                session.session_id,
                position,
                Role.ASSISTANT,
                decision.content,
                created_at=now,
                turn_id=run.turn.turn_id,
            )
            run.turn.complete(StopReason.END_TURN, run.usage, now)
            body = chunks.AssistantMessage(message.message_id, message.content)
        else:
            assert isinstance(decision, ToolCallDecision)
            message = Message(
                self._ids("msg"),
                session.session_id,
                position,
                Role.ASSISTANT,
                decision.content,
                created_at=now,
                turn_id=run.turn.turn_id,
                tool_calls=(decision.call,),
            )
            stop = (
                StopReason.AWAITING_APPROVAL if decision.requires_approval else StopReason.TOOL_CALL
            )
            run.turn.complete(stop, run.usage, now)
            body = chunks.ToolCall(
                message.message_id,
                decision.call.call_id,
                decision.call.tool_name,
                decision.call.arguments,
                decision.requires_approval,
                decision.approval_reason,
            )
            if decision.dropped_calls:
                log.info(
                    "turn %s: kept the first of %d tool calls",
                    run.turn.turn_id,
                    decision.dropped_calls + 1,
                )
        await uow.messages.add(message)
        await uow.turns.save(run.turn)
        await uow.sessions.record_activity(
            session.session_id, now, message_count=position, release_turn=run.turn.turn_id
        )
        await uow.commit()  # COMMIT #2: only now may the client hear of the answer
        session.message_count = position
        run.committed_final = True
        return body

    # -- abnormal endings: each recorded in its own short transaction --------------------

    async def _fail(
        self, uow: UnitOfWork, run: _TurnRun, error: DomainError
    ) -> AsyncIterator[chunks.Chunk]:
        await uow.rollback()
        run.turn.fail(TurnError(error.reason, error.message), run.usage, self._now())
        await self._record_ending(run)
        yield run.chunk(chunks.TurnError(error))
        yield run.chunk(chunks.TurnCompleted(StopReason.ERROR, run.usage))

    async def _record_cancelled(self, run: _TurnRun) -> None:
        run.turn.cancel(run.usage, self._now())
        partial = "".join(run.partial_text)
        incomplete = None
        if partial:
            incomplete = Message(
                self._ids("msg"),
                run.session.session_id,
                run.session.message_count + 1,
                Role.ASSISTANT,
                partial,
                created_at=self._now(),
                turn_id=run.turn.turn_id,
                incomplete=True,
            )
        await self._record_ending(run, incomplete)

    async def _record_ending(self, run: _TurnRun, extra: Message | None = None) -> None:
        """Persist a failed or cancelled turn and free the session."""
        now = self._now()
        count = run.session.message_count + (1 if extra else 0)
        async with self._uow_factory() as uow:
            if extra is not None:
                await uow.messages.add(extra)
            await uow.turns.save(run.turn)
            await uow.sessions.record_activity(
                run.session.session_id, now, message_count=count, release_turn=run.turn.turn_id
            )
            await uow.commit()
        run.session.message_count = count
