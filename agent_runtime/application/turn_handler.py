"""TurnHandler: one input in, one turn's chunks out, every final chunk after its commit.

The unit of work belongs to the RPC: it is opened here, inside the streaming call, and
closed when the stream ends, however it ends. No transaction is open while the model
streams, so a slow model never holds a database lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent_runtime.application.commands import (
    DecideApproval,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.context_window import fit_context_window
from agent_runtime.application.ids import Clock, IdFactory, new_id, utc_now
from agent_runtime.application.ports import ChatRequest, LLMClient, UnitOfWork, UnitOfWorkFactory
from agent_runtime.application.turn_state import Opening, TurnState
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue, AgentProfile
from agent_runtime.domain.errors import (
    DomainError,
    InternalError,
    InvalidInput,
    ModelError,
    ModelProtocolError,
    NotFound,
    PreconditionFailed,
    SessionBusy,
)
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    ApprovalStatus,
    ApprovalVerdict,
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
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

SUPERSEDED_TOOL_RESULT = "not executed: superseded by a new message"
EXPIRED_TOOL_RESULT = "not executed: the approval expired before anyone decided"
REJECTED_TOOL_RESULT = "not executed: the user rejected this tool call"
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

    async def handle(self, cmd: TurnCommand) -> AsyncGenerator[chunks.Chunk, None]:
        """Run one turn. Raises DomainError before TurnStarted; afterwards failures are chunks."""
        self._validate(cmd)
        async with self._uow_factory() as uow:
            state, opening = await self._begin(uow, cmd)  # COMMIT #1 happens inside
            yield state.chunk(chunks.TurnStarted(state.agent.name, opening.input_message_id))
            try:
                for body in opening.chunks:
                    yield state.chunk(body)
                if not opening.run_model:
                    yield state.chunk(chunks.TurnCompleted(opening.stop_reason, state.usage))
                    return
                async with aclosing(self._model_loop(uow, state)) as stream:
                    async for chunk in stream:
                        yield chunk
            except (asyncio.CancelledError, GeneratorExit):
                if not state.finished:
                    await uow.rollback()
                    state.restore()
                    await asyncio.shield(self._record_cancelled(state))
                raise

    # -- validation ---------------------------------------------------------------------------

    def _validate(self, cmd: TurnCommand) -> None:
        if cmd.session_id:
            validate_session_id(cmd.session_id)
        elif not isinstance(cmd, SendUserMessage | SwitchAgent):
            raise InvalidInput.field("session_id", "is required for this input")
        match cmd:
            case SendUserMessage():
                if not cmd.content.strip():
                    raise InvalidInput.field(
                        "user_message.content", "must not be empty", reason="EMPTY_MESSAGE"
                    )
                self._check_size("user_message.content", cmd.content)
                if cmd.agent:
                    self._agents.get(cmd.agent)  # unknown agent -> InvalidInput
            case SubmitToolResult():
                self._require_call_id("tool_result.call_id", cmd.call_id)
                self._check_size("tool_result.content", cmd.content)
            case DecideApproval():
                self._require_call_id("approval_decision.call_id", cmd.call_id)
                if cmd.verdict is None:
                    raise InvalidInput.field(
                        "approval_decision.decision", "must be APPROVE, EDIT or REJECT"
                    )
                if cmd.verdict is ApprovalVerdict.EDIT and cmd.edited_arguments is None:
                    raise InvalidInput.field(
                        "approval_decision.edited_arguments", "is required with EDIT"
                    )
                self._check_size("approval_decision.feedback", cmd.feedback)
            case SwitchAgent():
                if not cmd.agent:
                    raise InvalidInput.field("switch_agent.agent", "must name an agent")
                try:
                    self._agents.get(cmd.agent)
                except InvalidInput as exc:
                    raise InvalidInput.field(
                        "switch_agent.agent", exc.violations[0].description, reason=exc.reason
                    ) from None

    def _check_size(self, field: str, text: str) -> None:
        size = len(text.encode())
        if size > self._settings.max_message_bytes:
            raise InvalidInput.field(
                field,
                f"is {size} bytes; the limit is {self._settings.max_message_bytes}",
                reason="MESSAGE_TOO_LARGE",
            )

    @staticmethod
    def _require_call_id(field: str, call_id: str) -> None:
        if not call_id:
            raise InvalidInput.field(field, "must name a tool call")

    # -- COMMIT #1: claim the session, record the input -------------------------------------

    async def _begin(self, uow: UnitOfWork, cmd: TurnCommand) -> tuple[TurnState, Opening]:
        now = self._now()
        turn_id = self._ids("turn")
        session_id = cmd.session_id or self._ids("ses")
        session = await uow.sessions.get(session_id)
        if session is not None and session.deleted_at is not None:
            raise _session_not_found(session_id)
        history: list[Message] = []
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
            running = await uow.sessions.claim_turn(session_id, turn_id)
            if running is not None:
                raise SessionBusy(
                    f"session {session_id} is running turn {running}",
                    metadata={"session_id": session_id, "turn_id": running},
                )
            history = await uow.messages.recent(session_id, self._settings.context_window_messages)

        override = cmd.agent if isinstance(cmd, SendUserMessage) else ""
        agent = self._agents.get(override or session.agent)
        turn = Turn(
            turn_id,
            session_id,
            agent=agent.name,
            model=self._model_for(agent, getattr(cmd, "model", "")),
            started_at=now,
            client_message_id=cmd.client_message_id or None,
        )
        state = TurnState(session, turn, agent, history, model_override=getattr(cmd, "model", ""))
        await uow.turns.add(turn)
        await self._event(uow, state, EventType.TURN_STARTED, input=_input_kind(cmd))

        match cmd:
            case SendUserMessage():
                opening = await self._open_user_message(uow, state, cmd)
            case SubmitToolResult():
                opening = await self._open_tool_result(uow, state, cmd)
            case DecideApproval():
                opening = await self._open_approval_decision(uow, state, cmd)
            case SwitchAgent():
                opening = await self._open_switch_agent(uow, state, cmd)
        turn.input_message_id = opening.input_message_id or None

        if opening.run_model:
            await self._commit(uow, state, model_call_next=True)
        else:
            await self._finish(uow, state, opening.stop_reason)
        return state, opening

    def _model_for(self, agent: AgentProfile, requested: str) -> str:
        return requested or agent.model or self._settings.default_model

    async def _open_user_message(
        self, uow: UnitOfWork, state: TurnState, cmd: SendUserMessage
    ) -> Opening:
        await self._close_open_calls(uow, state)
        message = await self._append(uow, state, Role.USER, cmd.content)
        return Opening(message.message_id)

    async def _close_open_calls(self, uow: UnitOfWork, state: TurnState) -> None:
        """Answer an unanswered tool call and close its approval, so history stays valid."""
        now = self._now()
        for approval in await uow.approvals.open_for_session(state.session.session_id):
            status = (
                ApprovalStatus.EXPIRED if approval.is_expired(now) else ApprovalStatus.SUPERSEDED
            )
            approval.close(status, now)
            await uow.approvals.save(approval)
            await self._event(
                uow,
                state,
                EventType.APPROVAL_DECIDED,
                call_id=approval.call_id,
                decision=status.value,
            )
        last = state.history[-1] if state.history else None
        call = last.requested_call if last and last.role is Role.ASSISTANT else None
        if call is not None:
            await self._append(
                uow,
                state,
                Role.TOOL,
                SUPERSEDED_TOOL_RESULT,
                tool_call_id=call.call_id,
                is_error=True,
            )

    async def _open_tool_result(
        self, uow: UnitOfWork, state: TurnState, cmd: SubmitToolResult
    ) -> Opening:
        session_id = state.session.session_id
        await self._find_call(uow, session_id, cmd.call_id)
        if await uow.messages.find_tool_result(session_id, cmd.call_id) is not None:
            raise PreconditionFailed(
                f"tool call {cmd.call_id} already has a result",
                reason="ALREADY_ANSWERED",
                metadata={"call_id": cmd.call_id},
            )
        approval = await uow.approvals.get(session_id, cmd.call_id)
        if approval is not None and approval.status is ApprovalStatus.PENDING:
            expired = approval.is_expired(self._now())
            raise PreconditionFailed(
                f"tool call {cmd.call_id} "
                + (
                    "was never approved: its approval expired"
                    if expired
                    else "needs a human's approval before it may run"
                ),
                reason="APPROVAL_EXPIRED" if expired else "APPROVAL_REQUIRED",
                metadata={"call_id": cmd.call_id},
            )
        message = await self._append(
            uow, state, Role.TOOL, cmd.content, tool_call_id=cmd.call_id, is_error=cmd.is_error
        )
        return Opening(message.message_id)

    async def _open_approval_decision(
        self, uow: UnitOfWork, state: TurnState, cmd: DecideApproval
    ) -> Opening:
        session_id = state.session.session_id
        approval = await uow.approvals.get(session_id, cmd.call_id)
        if approval is None:
            raise NotFound(
                f"no approval for tool call {cmd.call_id} in session {session_id}",
                reason="APPROVAL_NOT_FOUND",
                metadata={"call_id": cmd.call_id},
            )
        if approval.status is not ApprovalStatus.PENDING:
            raise PreconditionFailed(
                f"the approval of tool call {cmd.call_id} was already closed "
                f"({approval.status.value})",
                reason="ALREADY_DECIDED",
                metadata={"call_id": cmd.call_id, "status": approval.status.value},
            )
        now = self._now()
        if approval.is_expired(now) or cmd.verdict is ApprovalVerdict.REJECT:
            expired = approval.is_expired(now)
            status = ApprovalStatus.EXPIRED if expired else ApprovalStatus.REJECTED
            approval.close(status, now, feedback=cmd.feedback)
            await uow.approvals.save(approval)
            await self._event(
                uow,
                state,
                EventType.APPROVAL_DECIDED,
                call_id=approval.call_id,
                decision=status.value,
                feedback=cmd.feedback,
            )
            text = EXPIRED_TOOL_RESULT if expired else REJECTED_TOOL_RESULT
            if cmd.feedback and not expired:
                text += f". Feedback: {cmd.feedback}"
            message = await self._append(
                uow, state, Role.TOOL, text, tool_call_id=approval.call_id, is_error=True
            )
            return Opening(message.message_id)

        call = ToolCallRecord(approval.call_id, approval.tool_name, approval.arguments)
        status = ApprovalStatus.APPROVED
        if cmd.verdict is ApprovalVerdict.EDIT:
            call = ToolCallRecord(call.call_id, call.tool_name, dict(cmd.edited_arguments or {}))
            problems = self._tools.problems(state.agent, call)
            if problems:
                raise InvalidInput.field(
                    "approval_decision.edited_arguments",
                    "; ".join(problems),
                    reason="INVALID_TOOL_ARGUMENTS",
                )
            await uow.messages.replace_tool_call(approval.message_id, call)
            status = ApprovalStatus.EDITED
        approval.close(status, now, feedback=cmd.feedback, final_arguments=call.arguments)
        await uow.approvals.save(approval)
        await self._event(
            uow,
            state,
            EventType.APPROVAL_DECIDED,
            call_id=call.call_id,
            decision=status.value,
            feedback=cmd.feedback,
        )
        await self._event(
            uow,
            state,
            EventType.TOOL_EXECUTION_REQUESTED,
            call_id=call.call_id,
            tool_name=call.tool_name,
        )
        tool_call = chunks.ToolCall(
            approval.message_id, call.call_id, call.tool_name, call.arguments, False, ""
        )
        return Opening(chunks=(tool_call,), run_model=False, stop_reason=StopReason.TOOL_CALL)

    async def _open_switch_agent(
        self, uow: UnitOfWork, state: TurnState, cmd: SwitchAgent
    ) -> Opening:
        switched = await self._switch_agent(uow, state, self._agents.get(cmd.agent), cmd.reason)
        return Opening(chunks=(switched,), run_model=False, stop_reason=StopReason.END_TURN)

    async def _find_call(self, uow: UnitOfWork, session_id: str, call_id: str) -> Message:
        message = await uow.messages.find_tool_call(session_id, call_id)
        if message is None:
            raise NotFound(
                f"no tool call {call_id} in session {session_id}",
                reason="TOOL_CALL_NOT_FOUND",
                metadata={"call_id": call_id},
            )
        return message

    # -- the model calls and COMMIT #2 -----------------------------------------------------

    async def _model_loop(
        self, uow: UnitOfWork, state: TurnState
    ) -> AsyncGenerator[chunks.Chunk, None]:
        try:
            if state.agent.routes:
                yield state.chunk(await self._route(uow, state))
            calls = 0
            while True:
                if calls == self._settings.max_iterations:
                    await self._finish(uow, state, StopReason.MAX_ITERATIONS)
                    yield state.chunk(chunks.TurnCompleted(StopReason.MAX_ITERATIONS, state.usage))
                    return
                calls += 1
                response = None
                async with aclosing(self._call_model(state, self._chat_request(state))) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            yield state.chunk(chunks.AssistantDelta(event.text))
                        else:
                            response = event
                assert response is not None
                final = await self._act_on(uow, state, response)
                if final is None:
                    continue
                yield state.chunk(final)  # already committed
                if isinstance(final, chunks.AgentSwitched):
                    continue
                stop = state.turn.stop_reason or StopReason.END_TURN
                yield state.chunk(chunks.TurnCompleted(stop, state.usage))
                return
        except DomainError as error:
            async for chunk in self._fail(uow, state, error):
                yield chunk
        except Exception as exc:  # a bug: record it, tell the client an id, never the details
            error_id = self._ids("err")
            log.exception(
                "turn %s failed unexpectedly (error id %s)",
                state.turn.turn_id,
                error_id,
                exc_info=exc,
            )
            internal = InternalError(
                f"internal error (error id {error_id})", metadata={"error_id": error_id}
            )
            async for chunk in self._fail(uow, state, internal):
                yield chunk

    def _chat_request(self, state: TurnState) -> ChatRequest:
        return ChatRequest(
            model=state.turn.model,
            system_prompt=state.agent.system_prompt,
            history=fit_context_window(state.history, self._settings.context_window_messages),
            tools=self._tools.tools_for(state.agent),
        )

    async def _call_model(
        self, state: TurnState, request: ChatRequest, *, visible: bool = True
    ) -> AsyncGenerator[TextDelta | ModelResponse, None]:
        """One model call: deltas as they come, then the response (usage added to the turn).

        `visible`: the text is the assistant's answer (kept as partial text on cancel).
        """
        state.partial_text.clear()
        state.model_call_started = time.monotonic()
        response = None
        # aclosing: when the client goes away mid-stream, the model request is closed now.
        async with aclosing(self._llm.stream_chat(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    if visible:
                        state.partial_text.append(event.text)
                else:
                    response = event
                yield event
        if response is None:
            raise ModelProtocolError("the model stream ended without a final response")
        state.usage = state.usage + (response.usage or Usage())

    async def _model_done(self, uow: UnitOfWork, state: TurnState, response: ModelResponse) -> None:
        usage = response.usage or Usage()
        state.model_outcome = {
            "model": state.turn.model,
            "duration_ms": self._call_ms(state),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": response.finish_reason or "",
        }
        await self._event(uow, state, EventType.MODEL_REQUEST_COMPLETED, **state.model_outcome)
        state.model_call_started = None
        state.partial_text.clear()

    async def _act_on(
        self, uow: UnitOfWork, state: TurnState, response: ModelResponse
    ) -> chunks.AssistantMessage | chunks.ToolCall | chunks.AgentSwitched | None:
        """Record what the answer means. Returns the chunk to send, None to call the model again."""
        decision = self._processor.process(response, state.agent)
        if isinstance(decision, InvalidAnswer):
            raise ModelProtocolError(decision.message, reason=decision.reason)
        await self._model_done(uow, state, response)

        if isinstance(decision, FinalAnswer):
            message = await self._append(uow, state, Role.ASSISTANT, decision.content)
            await self._finish(uow, state, StopReason.END_TURN)  # COMMIT #2
            return chunks.AssistantMessage(message.message_id, message.content)

        decision = await self._unique_call_id(uow, state, decision)
        message = await self._append(
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
            await self._append(
                uow,
                state,
                Role.TOOL,
                decision.tool_error(),
                tool_call_id=decision.call.call_id,
                is_error=True,
            )
            await self._commit(uow, state, model_call_next=True)
            return None

        call = decision.call
        if call.tool_name == SWITCH_MODE_TOOL:
            return await self._run_switch_mode(uow, state, call)

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
            await self._event(
                uow,
                state,
                EventType.APPROVAL_REQUIRED,
                call_id=call.call_id,
                tool_name=call.tool_name,
                expires_at=approval.expires_at.isoformat(),
            )
            stop = StopReason.AWAITING_APPROVAL
        else:
            await self._event(
                uow,
                state,
                EventType.TOOL_EXECUTION_REQUESTED,
                call_id=call.call_id,
                tool_name=call.tool_name,
            )
            stop = StopReason.TOOL_CALL
        await self._finish(uow, state, stop)  # COMMIT #2
        return chunks.ToolCall(
            message.message_id,
            call.call_id,
            call.tool_name,
            call.arguments,
            decision.requires_approval,
            decision.approval_reason,
        )

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
    ) -> chunks.AgentSwitched | None:
        """The runtime's own tool: switch agent, tell the model, let the new agent go on."""
        mode = str(call.arguments.get("mode", ""))
        target = self._agents.profiles.get(mode)
        if target is None or target.routes:
            known = ", ".join(p.name for p in self._agents.specialists())
            await self._append(
                uow,
                state,
                Role.TOOL,
                f"Unknown mode '{mode}'. Known: {known}",
                tool_call_id=call.call_id,
                is_error=True,
            )
            await self._commit(uow, state, model_call_next=True)
            return None
        switched = await self._switch_agent(
            uow, state, target, str(call.arguments.get("reason", ""))
        )
        await self._append(
            uow, state, Role.TOOL, f"Switched to agent '{target.name}'.", tool_call_id=call.call_id
        )
        await self._commit(uow, state, model_call_next=True)
        return switched

    async def _route(self, uow: UnitOfWork, state: TurnState) -> chunks.AgentSwitched:
        """The orchestrator: one classification call, then keyword rules, then the fallback."""
        question = next((m for m in reversed(state.history) if m.role is Role.USER), None)
        text = question.content if question else ""
        request = ChatRequest(
            model=state.turn.model,
            system_prompt=classification_prompt(self._agents),
            history=[question] if question else [],
            tools=[],
        )
        decision: RoutingDecision | None = None
        try:
            async with aclosing(self._call_model(state, request, visible=False)) as events:
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
            await self._event(
                uow,
                state,
                EventType.MODEL_REQUEST_FAILED,
                reason=error.reason,
                duration_ms=self._call_ms(state),
            )
            state.model_call_started = None
        if decision is None:
            decision = route_by_keywords(text, self._agents)
        reason = f"routed by {decision.method.value} (confidence {decision.confidence:.2f})"
        if decision.reason:
            reason += f": {decision.reason}"
        switched = await self._switch_agent(uow, state, self._agents.get(decision.agent), reason)
        await self._commit(uow, state, model_call_next=True)
        return switched

    async def _switch_agent(
        self, uow: UnitOfWork, state: TurnState, target: AgentProfile, reason: str
    ) -> chunks.AgentSwitched:
        switch = AgentSwitch(state.agent.name, target.name, reason, self._now(), state.turn.turn_id)
        await uow.sessions.switch_agent(state.session.session_id, switch)
        await self._event(
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
        state.turn.model = self._model_for(target, state.model_override)
        return chunks.AgentSwitched(switch.from_agent, switch.to_agent, reason)

    # -- persistence helpers ------------------------------------------------------------------

    async def _append(
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
        await self._event(
            uow,
            state,
            EventType.MESSAGE_PERSISTED,
            message_id=message.message_id,
            role=role.value,
            position=message.position,
        )
        return message

    async def _event(
        self, uow: UnitOfWork, state: TurnState, type_: EventType, **data: Any
    ) -> None:
        await uow.events.add(
            Event(type_, state.session.session_id, self._now(), state.turn.turn_id, data)
        )

    async def _commit(
        self,
        uow: UnitOfWork,
        state: TurnState,
        *,
        model_call_next: bool = False,
        release: bool = False,
    ) -> None:
        if model_call_next:
            await self._event(
                uow,
                state,
                EventType.MODEL_REQUEST_STARTED,
                model=state.turn.model,
                agent=state.agent.name,
            )
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
                self._committed(state, release)
            raise
        self._committed(state, release)

    @staticmethod
    def _committed(state: TurnState, release: bool) -> None:
        state.checkpoint()
        state.model_outcome = None
        if release:
            state.finished = True

    async def _finish(self, uow: UnitOfWork, state: TurnState, stop: StopReason) -> None:
        """Complete the turn and free the session, in the same commit as its last writes."""
        state.turn.complete(stop, state.usage, self._now())
        await uow.turns.save(state.turn)
        await self._event(
            uow,
            state,
            EventType.TURN_COMPLETED,
            stop_reason=stop.value,
            prompt_tokens=state.usage.prompt_tokens,
            completion_tokens=state.usage.completion_tokens,
        )
        await self._commit(uow, state, release=True)

    def _call_ms(self, state: TurnState) -> int:
        if state.model_call_started is None:
            return 0
        return round((time.monotonic() - state.model_call_started) * 1000)

    # -- abnormal endings: each recorded in its own short transaction --------------------

    async def _fail(
        self, uow: UnitOfWork, state: TurnState, error: DomainError
    ) -> AsyncGenerator[chunks.Chunk, None]:
        await uow.rollback()
        state.restore()
        state.turn.fail(TurnError(error.reason, error.message), state.usage, self._now())
        await self._record_ending(
            state, EventType.TURN_FAILED, error.reason, reason=error.reason, message=error.message
        )
        yield state.chunk(chunks.TurnError(error))
        yield state.chunk(chunks.TurnCompleted(StopReason.ERROR, state.usage))

    async def _record_cancelled(self, state: TurnState) -> None:
        state.turn.cancel(state.usage, self._now())
        await self._record_ending(state, EventType.TURN_CANCELLED, "CANCELLED", keep_partial=True)

    async def _record_ending(
        self,
        state: TurnState,
        type_: EventType,
        model_reason: str,
        *,
        keep_partial: bool = False,
        **data: Any,
    ) -> None:
        """Persist a failed or cancelled turn (and partial text) and free the session."""
        async with self._uow_factory() as uow:
            if state.model_outcome is not None:
                # The model answered, but the commit that recorded it was rolled back.
                await self._event(
                    uow, state, EventType.MODEL_REQUEST_COMPLETED, **state.model_outcome
                )
            elif state.model_call_started is not None:
                await self._event(
                    uow,
                    state,
                    EventType.MODEL_REQUEST_FAILED,
                    reason=model_reason,
                    duration_ms=self._call_ms(state),
                )
            partial = "".join(state.partial_text)
            if keep_partial and partial:
                await self._append(uow, state, Role.ASSISTANT, partial, incomplete=True)
            await uow.turns.save(state.turn)
            await self._event(uow, state, type_, **data)
            await self._commit(uow, state, release=True)


def _input_kind(cmd: TurnCommand) -> str:
    match cmd:
        case SendUserMessage():
            return "user_message"
        case SubmitToolResult():
            return "tool_result"
        case DecideApproval():
            return "approval_decision"
        case SwitchAgent():
            return "switch_agent"


def _session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id} not found",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )
