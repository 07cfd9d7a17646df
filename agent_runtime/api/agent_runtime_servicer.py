"""AgentRuntimeService: translates StreamMessage to the TurnHandler and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeAlias

import grpc
from google.protobuf import json_format

from agent_runtime.api.errors import abort, internal_error
from agent_runtime.api.mapping import chunk_to_proto
from agent_runtime.application.commands import (
    DecideApproval,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.turn_handler import TurnHandler
from agent_runtime.domain.errors import DomainError, InvalidInput
from agent_runtime.domain.model import ApprovalVerdict
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc

Context: TypeAlias = grpc.aio.ServicerContext[rt.StreamMessageRequest, rt.StreamChunk]

_VERDICTS = {
    rt.DECISION_APPROVE: ApprovalVerdict.APPROVE,
    rt.DECISION_EDIT: ApprovalVerdict.EDIT,
    rt.DECISION_REJECT: ApprovalVerdict.REJECT,
}


class AgentRuntimeServicer(rt_grpc.AgentRuntimeServiceServicer):
    def __init__(self, turns: TurnHandler) -> None:
        self._turns = turns

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Context
    ) -> AsyncIterator[rt.StreamChunk]:
        try:
            command = to_command(request)
            # aclosing: if the client goes away the handler's generator is closed at once, so
            # its unit of work ends the turn and closes instead of waiting for the GC.
            async with aclosing(self._turns.handle(command)) as chunks:
                async for chunk in chunks:
                    yield chunk_to_proto(chunk)
        except DomainError as error:  # raised only before TurnStarted
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, internal_error(exc))


def to_command(request: rt.StreamMessageRequest) -> TurnCommand:
    common = {"session_id": request.session_id, "client_message_id": request.client_message_id}
    match request.WhichOneof("input"):
        case "user_message":
            return SendUserMessage(
                content=request.user_message.content,
                agent=request.agent,
                model=request.model,
                **common,
            )
        case "tool_result":
            result = request.tool_result
            return SubmitToolResult(
                call_id=result.call_id,
                content=result.content,
                is_error=result.is_error,
                model=request.model,
                **common,
            )
        case "approval_decision":
            decision = request.approval_decision
            edited = (
                json_format.MessageToDict(decision.edited_arguments)
                if decision.HasField("edited_arguments")
                else None
            )
            return DecideApproval(
                call_id=decision.call_id,
                verdict=_VERDICTS.get(decision.decision),
                edited_arguments=edited,
                feedback=decision.feedback,
                model=request.model,
                **common,
            )
        case "switch_agent":
            return SwitchAgent(
                agent=request.switch_agent.agent, reason=request.switch_agent.reason, **common
            )
        case _:
            raise InvalidInput.field(
                "input",
                "set one of user_message, tool_result, approval_decision, switch_agent",
                reason="MISSING_INPUT",
            )
