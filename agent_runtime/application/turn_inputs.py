"""How each kind of input opens its turn: what it checks, what it records, what follows."""

from __future__ import annotations

from agent_runtime.application.approval_decisions import ApprovalDecisions, with_human_note
from agent_runtime.application.commands import (
    DecideApproval,
    EditMessage,
    Regenerate,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.ids import Clock
from agent_runtime.application.opening import Opening
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.approval import ApprovalStatus
from agent_runtime.domain.errors import InvalidInput, NotFound, PreconditionFailed
from agent_runtime.domain.model import Message, Role

SUPERSEDED_TOOL_RESULT = "not executed: superseded by a new message"


class TurnInputs:
    def __init__(self, agents: AgentCatalogue, approvals: ApprovalDecisions, clock: Clock) -> None:
        self._agents = agents
        self._approvals = approvals
        self._now = clock

    async def open(self, uow: UnitOfWork, turn: TurnRecorder, cmd: TurnCommand) -> Opening:
        match cmd:
            case SendUserMessage():
                return await self._user_message(uow, turn, cmd)
            case SubmitToolResult():
                return await self._tool_result(uow, turn, cmd)
            case DecideApproval():
                return await self._approvals.decide(uow, turn, cmd)
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
            await self._approvals.close(uow, turn, approval, status)
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
