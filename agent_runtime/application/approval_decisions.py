"""ApprovalDecisions: a human's verdict on a tool call that waits for approval (APPROVE,
EDIT, APPROVE_ALWAYS, REJECT), how an approval is closed, and the note the model reads with
a tool's result when a human changed the call or said something about it."""

from __future__ import annotations

import json
from typing import Any

from agent_runtime.application.commands import DecideApproval
from agent_runtime.application.ids import Clock, IdFactory
from agent_runtime.application.opening import Opening
from agent_runtime.application.session_bound import SessionBound
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain import chunks
from agent_runtime.domain.approval import (
    Approval,
    ApprovalGrant,
    ApprovalStatus,
    ApprovalVerdict,
    RuleAction,
    When,
    arguments_match,
)
from agent_runtime.domain.errors import InvalidInput, NotFound, PreconditionFailed
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import Role, StopReason, ToolCallRecord
from agent_runtime.domain.tool_filter import ToolFilterService

EXPIRED_TOOL_RESULT = "not executed: the approval expired before anyone decided"
REJECTED_TOOL_RESULT = "not executed: the user rejected this tool call"
# A note the model reads before a tool's result, about what a human did with the call.
NOTE_PREFIX = "[Note from the runtime: "
# How much of each set of arguments such a note shows.
MAX_NOTED_ARGUMENTS = 2000


class ApprovalDecisions:
    def __init__(
        self, tools: ToolFilterService, clock: Clock, ids: IdFactory, bound: SessionBound
    ) -> None:
        self._tools = tools
        self._now = clock
        self._ids = ids
        self._bound = bound

    async def decide(self, uow: UnitOfWork, turn: TurnRecorder, cmd: DecideApproval) -> Opening:
        """A human's verdict on a pending approval: the call goes to the client to run
        (approved, edited, approved always), or the model reads why it did not run."""
        session_id = turn.session.session_id
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
        expired = approval.is_expired(now)
        if expired or cmd.verdict is ApprovalVerdict.REJECT:
            status = ApprovalStatus.EXPIRED if expired else ApprovalStatus.REJECTED
            await self.close(uow, turn, approval, status, feedback=cmd.feedback)
            text = EXPIRED_TOOL_RESULT if expired else REJECTED_TOOL_RESULT
            if cmd.feedback:  # it reaches the model, even when the decision came too late
                text += f". Feedback: {cmd.feedback}"
            message = await turn.append(
                Role.TOOL, text, tool_call_id=approval.call_id, is_error=True
            )
            return Opening(message.message_id)

        call = ToolCallRecord(approval.call_id, approval.tool_name, approval.arguments)
        status = ApprovalStatus.APPROVED
        if cmd.verdict is ApprovalVerdict.EDIT:
            call = ToolCallRecord(call.call_id, call.tool_name, dict(cmd.edited_arguments or {}))
            problems = self._tools.problems(turn.agent, call, turn.declared_tools)
            if not problems:
                # The human stands in for a rule that asks, never for one that denies.
                outcome = turn.agent.approval_policy.decide(
                    call.tool_name,
                    call.arguments,
                    path_arguments=self._tools.path_arguments(call.tool_name, turn.declared_tools),
                )
                if outcome.action is RuleAction.DENY:
                    problems.append(outcome.reason)
            if problems:
                raise InvalidInput.field(
                    "approval_decision.edited_arguments",
                    "; ".join(problems),
                    reason="INVALID_TOOL_ARGUMENTS",
                )
            await uow.messages.replace_tool_call(approval.message_id, call)
            status = ApprovalStatus.EDITED
        grant = None
        if cmd.verdict is ApprovalVerdict.APPROVE_ALWAYS:
            grant = await self._grant(uow, turn, call, cmd.always_when)
            status = ApprovalStatus.APPROVED_ALWAYS
        await self.close(
            uow,
            turn,
            approval,
            status,
            feedback=cmd.feedback,
            final_arguments=call.arguments,
            grant=grant,
        )
        await turn.event(
            EventType.TOOL_EXECUTION_REQUESTED,
            call_id=call.call_id,
            tool_name=call.tool_name,
        )
        tool_call = chunks.ToolCall(
            approval.message_id, call.call_id, call.tool_name, call.arguments, False, ""
        )
        return Opening(chunks=(tool_call,), run_model=False, stop_reason=StopReason.TOOL_CALL)

    async def _grant(
        self, uow: UnitOfWork, turn: TurnRecorder, call: ToolCallRecord, always_when: dict[str, str]
    ) -> ApprovalGrant:
        """Record "allow for the rest of this session" for calls like this one: the rule the
        human chose must match the call they approve."""
        when: When = tuple(always_when.items())
        paths = self._tools.path_arguments(call.tool_name, turn.declared_tools)
        if not arguments_match(when, call.arguments, paths):
            raise InvalidInput.field(
                "approval_decision.always_when",
                f"must match the call being approved ({call.tool_name} with its arguments): "
                "name its string arguments, with globs they match",
                reason="INVALID_GRANT_RULE",
            )
        grant = ApprovalGrant(
            self._ids("grt"),
            turn.session.session_id,
            call.tool_name,
            when,
            self._now(),
            turn.turn.turn_id,
            call.call_id,
        )
        in_force = await uow.approvals.grants(grant.session_id)
        self._bound.check_grant(turn.session, [*in_force, grant])
        await uow.approvals.add_grant(grant)
        return grant

    async def close(
        self,
        uow: UnitOfWork,
        turn: TurnRecorder,
        approval: Approval,
        status: ApprovalStatus,
        *,
        feedback: str = "",
        final_arguments: dict[str, Any] | None = None,
        grant: ApprovalGrant | None = None,
    ) -> None:
        approval.close(status, self._now(), feedback=feedback, final_arguments=final_arguments)
        await uow.approvals.save(approval)
        await turn.event(
            EventType.APPROVAL_DECIDED,
            call_id=approval.call_id,
            decision=status.value,
            feedback=feedback,
            **({"grant_id": grant.grant_id, "when": dict(grant.when)} if grant else {}),
        )


def with_human_note(result: str, approval: Approval | None) -> str:
    """A tool's result as the model reads it: after a note saying that a human changed the
    call's arguments (and to what), and what they told the model, when they did."""
    if approval is None or approval.status not in _APPROVING:
        return result
    notes = []
    if approval.status is ApprovalStatus.EDITED:
        notes.append(
            "a human changed the arguments of this call before it ran; it ran with "
            f"{_shown(approval.final_arguments or {})} instead of the arguments asked for, "
            f"{_shown(approval.arguments)}"
        )
    if approval.feedback:
        notes.append(f"the human who approved it said: {approval.feedback}")
    if not notes:
        return result
    return f"{NOTE_PREFIX}{'; '.join(notes)}]\n\n{result}"


_APPROVING = (ApprovalStatus.APPROVED, ApprovalStatus.EDITED, ApprovalStatus.APPROVED_ALWAYS)


def _shown(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_NOTED_ARGUMENTS:
        return text[:MAX_NOTED_ARGUMENTS] + "...(cut)"
    return text
