"""How each kind of input opens its turn: what it checks, what it records, what follows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
from agent_runtime.application.ports import UnitOfWork
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.approval import ApprovalGrant, When, arguments_match
from agent_runtime.domain.errors import InvalidInput, NotFound, PreconditionFailed
from agent_runtime.domain.events import EventType
from agent_runtime.domain.model import (
    Approval,
    ApprovalStatus,
    ApprovalVerdict,
    Message,
    Role,
    StopReason,
    ToolCallRecord,
)
from agent_runtime.domain.tool_filter import ToolFilterService

SUPERSEDED_TOOL_RESULT = "not executed: superseded by a new message"
EXPIRED_TOOL_RESULT = "not executed: the approval expired before anyone decided"
REJECTED_TOOL_RESULT = "not executed: the user rejected this tool call"
# A note the model reads before a tool's result, about what a human did with the call.
NOTE_PREFIX = "[Note from the runtime: "
# How much of each set of arguments such a note shows.
MAX_NOTED_ARGUMENTS = 2000


@dataclass(frozen=True, slots=True)
class Opening:
    """How an input starts its turn: chunks to send after TurnStarted, then a model call or not."""

    input_message_id: str = ""
    chunks: tuple[chunks.ChunkBody, ...] = ()
    run_model: bool = True
    # When no model call follows, the turn ends with this.
    stop_reason: StopReason = StopReason.END_TURN


class TurnInputs:
    def __init__(
        self, agents: AgentCatalogue, tools: ToolFilterService, clock: Clock, ids: IdFactory
    ) -> None:
        self._agents = agents
        self._tools = tools
        self._now = clock
        self._ids = ids

    async def open(self, uow: UnitOfWork, turn: TurnRecorder, cmd: TurnCommand) -> Opening:
        match cmd:
            case SendUserMessage():
                return await self._user_message(uow, turn, cmd)
            case SubmitToolResult():
                return await self._tool_result(uow, turn, cmd)
            case DecideApproval():
                return await self._approval_decision(uow, turn, cmd)
            case SwitchAgent():
                switched = await turn.switch_agent(self._agents.get(cmd.agent), cmd.reason)
                return Opening(chunks=(switched,), run_model=False)
            case Regenerate():
                return await self._regenerate(uow, turn)
            case EditMessage():
                return await self._edit_message(uow, turn, cmd)

    async def _user_message(
        self, uow: UnitOfWork, turn: TurnRecorder, cmd: SendUserMessage
    ) -> Opening:
        await self._close_open_calls(uow, turn)
        message = await turn.append(Role.USER, cmd.content)
        return Opening(message.message_id)

    async def _regenerate(self, uow: UnitOfWork, turn: TurnRecorder) -> Opening:
        """The last user message is answered again: what followed it is superseded."""
        session_id = turn.session.session_id
        last = await uow.messages.last_user_message(session_id)
        if last is None:
            raise PreconditionFailed(
                f"session {session_id} has no user message to answer again",
                reason="NOTHING_TO_REGENERATE",
                metadata={"session_id": session_id},
            )
        await self._supersede(uow, turn, last.position + 1)
        return Opening(last.message_id)

    async def _edit_message(self, uow: UnitOfWork, turn: TurnRecorder, cmd: EditMessage) -> Opening:
        """The edited message and everything after it are superseded; the new content is
        a new user message at the end."""
        session_id = turn.session.session_id
        message = await uow.messages.get(session_id, cmd.message_id)
        if message is None:
            raise NotFound(
                f"no message {cmd.message_id} in session {session_id}",
                reason="MESSAGE_NOT_FOUND",
                metadata={"message_id": cmd.message_id},
            )
        if message.role is not Role.USER:
            raise InvalidInput.field(
                "edit_message.message_id",
                f"names a {message.role.value} message: only user messages can be edited",
                reason="NOT_A_USER_MESSAGE",
            )
        if message.superseded_by_turn_id is not None:
            raise PreconditionFailed(
                f"message {cmd.message_id} was already superseded "
                f"(by turn {message.superseded_by_turn_id})",
                reason="MESSAGE_SUPERSEDED",
                metadata={
                    "message_id": cmd.message_id,
                    "turn_id": message.superseded_by_turn_id,
                },
            )
        await self._supersede(uow, turn, message.position)
        edited = await turn.append(Role.USER, cmd.content)
        return Opening(edited.message_id)

    async def _supersede(self, uow: UnitOfWork, turn: TurnRecorder, position: int) -> None:
        """Drop the messages from `position` on from what the model sees, kept for audit and
        marked with this turn. A call left open among them is answered first (and its
        approval closed), as a new message would: the record stays a valid history too."""
        await self._close_open_calls(uow, turn)
        await uow.messages.supersede_from(turn.session.session_id, position, turn.turn.turn_id)
        await turn.reload_history()

    async def _close_open_calls(self, uow: UnitOfWork, turn: TurnRecorder) -> None:
        """Answer an unanswered tool call and close its approval, so history stays valid."""
        last = turn.history[-1] if turn.history else None
        call = last.requested_call if last and last.role is Role.ASSISTANT else None
        if call is None:
            return  # only the newest message can be a call still waiting (one at a time)
        now = self._now()
        for approval in await uow.approvals.open_for_session(turn.session.session_id):
            status = (
                ApprovalStatus.EXPIRED if approval.is_expired(now) else ApprovalStatus.SUPERSEDED
            )
            await self._close(uow, turn, approval, status)
        decided = await uow.approvals.get(turn.session.session_id, call.call_id)
        await turn.append(
            Role.TOOL,
            with_human_note(SUPERSEDED_TOOL_RESULT, decided),
            tool_call_id=call.call_id,
            is_error=True,
        )

    async def _tool_result(
        self, uow: UnitOfWork, turn: TurnRecorder, cmd: SubmitToolResult
    ) -> Opening:
        session_id = turn.session.session_id
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
        message = await turn.append(
            Role.TOOL,
            with_human_note(cmd.content, approval),
            tool_call_id=cmd.call_id,
            is_error=cmd.is_error,
        )
        return Opening(message.message_id)

    async def _approval_decision(
        self, uow: UnitOfWork, turn: TurnRecorder, cmd: DecideApproval
    ) -> Opening:
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
            await self._close(uow, turn, approval, status, feedback=cmd.feedback)
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
        await self._close(
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
        if not arguments_match(when, call.arguments, self._tools.path_arguments(call.tool_name)):
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
        await uow.approvals.add_grant(grant)
        return grant

    async def _close(
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

    @staticmethod
    async def _find_call(uow: UnitOfWork, session_id: str, call_id: str) -> Message:
        message = await uow.messages.find_tool_call(session_id, call_id)
        if message is None:
            raise NotFound(
                f"no tool call {call_id} in session {session_id}",
                reason="TOOL_CALL_NOT_FOUND",
                metadata={"call_id": call_id},
            )
        return message


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
