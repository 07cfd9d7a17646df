"""AgentRuntimeService: translates StreamMessage, ResumeStream and CancelTurn."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from google.protobuf import json_format

from agent_runtime.api.auth import caller_tenant
from agent_runtime.api.chunk_mapping import chunk_to_proto
from agent_runtime.api.errors import abort, internal_error, unary_errors
from agent_runtime.api.interceptors import check_decoded
from agent_runtime.api.model_controls_mapping import generation_from_proto, tools_from_proto
from agent_runtime.api.stream_limits import StreamLimits
from agent_runtime.application.commands import (
    DecideApproval,
    EditMessage,
    Regenerate,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.turn_cancellation import TurnCanceller
from agent_runtime.application.turn_handler import TurnHandler
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.domain.approval import ApprovalVerdict
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.errors import DomainError, InvalidInput
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc

_VERDICTS = {
    rt.DECISION_APPROVE: ApprovalVerdict.APPROVE,
    rt.DECISION_EDIT: ApprovalVerdict.EDIT,
    rt.DECISION_REJECT: ApprovalVerdict.REJECT,
    rt.DECISION_APPROVE_ALWAYS: ApprovalVerdict.APPROVE_ALWAYS,
}


class AgentRuntimeServicer(rt_grpc.AgentRuntimeServiceServicer):
    def __init__(
        self,
        turns: TurnHandler,
        streams: TurnStreams,
        canceller: TurnCanceller,
        limits: StreamLimits,
    ) -> None:
        self._turns = turns
        self._streams = streams
        self._canceller = canceller
        self._limits = limits

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        async for chunk in self._stream(
            request, context, lambda: self._turns.handle(to_command(request, caller_tenant()))
        ):
            yield chunk

    async def ResumeStream(
        self, request: rt.ResumeStreamRequest, context: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        tenant_id = caller_tenant()

        def follow() -> AsyncGenerator[Chunk, None]:
            return self._streams.follow(
                request.session_id, request.turn_id, request.after_seq, tenant_id=tenant_id
            )

        async for chunk in self._stream(request, context, follow):
            yield chunk

    @unary_errors
    async def CancelTurn(
        self, request: rt.CancelTurnRequest, context: Any
    ) -> rt.CancelTurnResponse:
        await self._canceller.cancel(request.session_id, request.turn_id, tenant_id=caller_tenant())
        return rt.CancelTurnResponse()

    async def _stream(
        self, request: object, context: Any, open_stream: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        """Map chunks to protobuf; errors before the first chunk become a status."""
        try:
            check_decoded(request)
            slot = self._limits.hold(caller_tenant(), context)
        except DomainError as error:
            await abort(context, error)
        try:
            # aclosing: if the client goes away the generator is closed at once, so the
            # turn's unit of work ends it and closes instead of waiting for the GC.
            async with aclosing(open_stream()) as chunks:
                async for chunk in chunks:
                    yield chunk_to_proto(chunk)
        except DomainError as error:  # raised only before TurnStarted
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, internal_error(exc))
        finally:
            slot.release()


def to_command(request: rt.StreamMessageRequest, tenant_id: str) -> TurnCommand:
    common: dict[str, Any] = {
        "session_id": request.session_id,
        "client_message_id": request.client_message_id,
        "tenant_id": tenant_id,
    }
    kind = request.WhichOneof("input")
    if kind is not None and kind != "switch_agent":  # switch_agent calls no model
        # What this request sets for the model calls of its turn.
        common["generation"] = generation_from_proto(request.generation)
        common["tools"] = tools_from_proto(request.tools, "tools")
    match kind:
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
            edited = _struct_to_dict(decision) if decision.HasField("edited_arguments") else None
            return DecideApproval(
                call_id=decision.call_id,
                verdict=_VERDICTS.get(decision.decision),
                edited_arguments=edited,
                feedback=decision.feedback,
                model=request.model,
                always_when=dict(decision.always_when),
                **common,
            )
        case "switch_agent":
            return SwitchAgent(
                agent=request.switch_agent.agent, reason=request.switch_agent.reason, **common
            )
        case "regenerate":
            return Regenerate(model=request.model, **common)
        case "edit_message":
            replacement = request.edit_message
            return EditMessage(
                message_id=replacement.message_id,
                content=replacement.content,
                model=request.model,
                **common,
            )
        case _:
            raise InvalidInput.field(
                "input",
                "set one of user_message, tool_result, approval_decision, switch_agent, "
                "regenerate, edit_message",
                reason="MISSING_INPUT",
            )


def _struct_to_dict(decision: rt.ApprovalDecision) -> dict[str, Any]:
    try:
        return dict(json_format.MessageToDict(decision.edited_arguments))
    except ValueError as exc:  # NaN or Infinity: not JSON, so not tool arguments either
        raise InvalidInput.field("approval_decision.edited_arguments", str(exc)) from None
