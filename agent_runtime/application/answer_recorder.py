"""AnswerRecorder: what a model answer means for the turn, recorded for COMMIT #2.

The domain decides (LLMResponseProcessor): a final answer, a tool call for the client (after
a human's approval if the policy says so), or a call the agent may not make. This records
the decision: the assistant or tool-call message, the approval, the events, and how the
turn goes on (it ends, or the model is called again).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from agent_runtime.application.agent_routing import SWITCH_MODE_TOOL, AgentRouter
from agent_runtime.application.call_ids import CallIds
from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain import chunks
from agent_runtime.domain.approval import Approval
from agent_runtime.domain.errors import ModelProtocolError
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Role, StopReason, ToolCallRecord
from agent_runtime.domain.model_output import ModelResponse
from agent_runtime.domain.response_processor import (
    FinalAnswer,
    InvalidAnswer,
    LLMResponseProcessor,
    RejectedToolCall,
    ToolCallDecision,
)

log = logging.getLogger(__name__)

_CallDecision = ToolCallDecision | RejectedToolCall


class AnswerRecorder:
    def __init__(
        self,
        processor: LLMResponseProcessor,
        router: AgentRouter,
        *,
        max_iterations: int,
        approval_ttl: timedelta,
        clock: Clock,
        ids: IdFactory,
        call_ids: CallIds,
    ) -> None:
        self._processor = processor
        self._router = router
        self._max_iterations = max_iterations
        self._approval_ttl = approval_ttl
        self._now = clock
        self._ids = ids
        self._call_ids = call_ids

    async def record(self, uow: UnitOfWork, turn: TurnRecorder, response: ModelResponse) -> None:
        """Record the answer. Afterwards the turn is finished (its final chunks recorded),
        or the model is to be called again. Raises ModelProtocolError for an answer that
        cannot be used at all."""
        # Grants matter only to a tool call: most answers have none, and need no read.
        grants = await turn.grants_in_force() if response.tool_calls else ()
        decision = self._processor.process(response, turn.agent, turn.declared_tools, grants)
        if isinstance(decision, InvalidAnswer):
            raise ModelProtocolError(decision.message, reason=decision.reason)
        await turn.model_answered(response)
        # Kept for the client if the agent says so; never sent back to the model.
        reasoning = response.reasoning if turn.agent.store_reasoning else ""

        if isinstance(decision, FinalAnswer):
            message = await turn.append(Role.ASSISTANT, decision.content, reasoning=reasoning)
            answer = chunks.AssistantMessage(message.message_id, message.content)
            await turn.finish(StopReason.END_TURN, answer)
            return

        decision = await self._unique_call_id(uow, turn, decision)
        call = decision.call
        message = await turn.append(
            Role.ASSISTANT, decision.content, tool_calls=(call,), reasoning=reasoning
        )
        if decision.dropped_calls:
            log.info(
                "turn %s: kept the first of %d tool calls",
                turn.turn.turn_id,
                decision.dropped_calls + 1,
            )
        if isinstance(decision, RejectedToolCall):
            # Never sent to the client: the model reads why and may try again.
            await turn.append(
                Role.TOOL, decision.tool_error(), tool_call_id=call.call_id, is_error=True
            )
            await self._call_again_unless_out_of_iterations(turn)
        elif call.tool_name == SWITCH_MODE_TOOL:
            await self._router.switch_mode(turn, call)
            await self._call_again_unless_out_of_iterations(turn)
        else:
            await self._ask_the_client(uow, turn, message.message_id, decision)

    async def _ask_the_client(
        self, uow: UnitOfWork, turn: TurnRecorder, message_id: str, decision: ToolCallDecision
    ) -> None:
        """The call goes to the client: to run, or first to a human for approval."""
        call = decision.call
        if decision.requires_approval:
            approval = Approval.open(
                self._ids("apr"),
                turn.session.session_id,
                message_id,
                turn.turn.turn_id,
                call,
                decision.approval_reason,
                self._now(),
                self._approval_ttl,
                rule=decision.approval.rule,
                rule_index=decision.approval.rule_index,
            )
            await uow.approvals.add(approval)
            await turn.event(
                EventType.APPROVAL_REQUIRED,
                call_id=call.call_id,
                tool_name=call.tool_name,
                expires_at=approval.expires_at.isoformat(),
            )
            stop = StopReason.AWAITING_APPROVAL
        else:
            allowed = decision.approval
            await turn.event(
                EventType.TOOL_EXECUTION_REQUESTED,
                call_id=call.call_id,
                tool_name=call.tool_name,
                # Which rule (or the session's grant) let it run without asking.
                **({"rule_index": allowed.rule_index} if allowed.rule_index else {}),
                **({"grant_id": allowed.grant_id} if allowed.grant_id else {}),
            )
            stop = StopReason.TOOL_CALL
        body = chunks.ToolCall(
            message_id,
            call.call_id,
            call.tool_name,
            call.arguments,
            decision.requires_approval,
            decision.approval_reason,
        )
        await turn.finish(stop, body)

    async def _call_again_unless_out_of_iterations(self, turn: TurnRecorder) -> None:
        if turn.calls.answers >= self._max_iterations:
            await turn.finish(StopReason.MAX_ITERATIONS)

    async def _unique_call_id(
        self, uow: UnitOfWork, turn: TurnRecorder, decision: _CallDecision
    ) -> _CallDecision:
        """The call under an id unique in the session (CallIds). A streamed call has one
        already, checked at its first fragment, the one its ToolCallDelta chunks carried: it
        keeps it."""
        call = decision.call
        if call.call_id in turn.calls.checked_call_ids:
            return decision
        unique = await self._call_ids.unique(uow.messages, turn.session.session_id, call.call_id)
        if unique == call.call_id:
            return decision
        renamed = ToolCallRecord(unique, call.tool_name, call.arguments)
        return dataclasses.replace(decision, call=renamed)
