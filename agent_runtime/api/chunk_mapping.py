"""A turn's chunks as StreamChunk messages (StreamMessage, ResumeStream). The stop reasons
and usage are also a stored Turn's (mapping.turn_to_proto)."""

from __future__ import annotations

from agent_runtime.api.errors import code_name
from agent_runtime.api.proto_values import to_struct
from agent_runtime.domain import chunks
from agent_runtime.domain.model import StopReason, Usage
from agent_runtime.v1 import agent_runtime_pb2 as rt

STOP_REASONS = {
    StopReason.END_TURN: rt.STOP_REASON_END_TURN,
    StopReason.TOOL_CALL: rt.STOP_REASON_TOOL_CALL,
    StopReason.AWAITING_APPROVAL: rt.STOP_REASON_AWAITING_APPROVAL,
    StopReason.ERROR: rt.STOP_REASON_ERROR,
    StopReason.CANCELLED: rt.STOP_REASON_CANCELLED,
    StopReason.MAX_ITERATIONS: rt.STOP_REASON_MAX_ITERATIONS,
}


def usage_to_proto(usage: Usage) -> rt.Usage:
    return rt.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def chunk_to_proto(chunk: chunks.Chunk) -> rt.StreamChunk:
    out = rt.StreamChunk(session_id=chunk.session_id, turn_id=chunk.turn_id, seq=chunk.seq)
    body = chunk.body
    match body:
        case chunks.AssistantDelta(text=text):
            out.assistant_delta.text = text
        case chunks.ToolCallDelta():
            delta = out.tool_call_delta
            delta.call_id = body.call_id
            delta.tool_name = body.tool_name
            delta.arguments_fragment = body.arguments_fragment
        case chunks.ReasoningDelta(text=text):
            out.reasoning_delta.text = text
        case chunks.TurnStarted():
            out.turn_started.CopyFrom(
                rt.TurnStarted(
                    turn_id=chunk.turn_id, agent=body.agent, input_message_id=body.input_message_id
                )
            )
        case chunks.AssistantMessage():
            out.assistant_message.CopyFrom(
                rt.AssistantMessage(message_id=body.message_id, content=body.content)
            )
        case chunks.ToolCall():
            out.tool_call.CopyFrom(
                rt.ToolCall(
                    message_id=body.message_id,
                    call_id=body.call_id,
                    tool_name=body.tool_name,
                    arguments=to_struct(body.arguments),
                    requires_approval=body.requires_approval,
                    approval_reason=body.approval_reason,
                )
            )
        case chunks.AgentSwitched():
            out.agent_switched.CopyFrom(
                rt.AgentSwitched(
                    from_agent=body.from_agent, to_agent=body.to_agent, reason=body.reason
                )
            )
        case chunks.TurnError(error=error):
            out.error.CopyFrom(
                rt.Error(
                    code=code_name(error),
                    reason=error.reason,
                    message=error.message,
                    retryable=error.retryable,
                )
            )
        case chunks.TurnCompleted():
            out.turn_completed.CopyFrom(
                rt.TurnCompleted(
                    stop_reason=STOP_REASONS[body.stop_reason], usage=usage_to_proto(body.usage)
                )
            )
    return out
