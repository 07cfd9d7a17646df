"""Proto <-> domain translation. No rules here: only shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from agent_runtime.api.errors import code_name
from agent_runtime.domain import chunks
from agent_runtime.domain.model import Message, Role, Session, StopReason, Usage
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses

_STOP_REASONS = {
    StopReason.END_TURN: rt.STOP_REASON_END_TURN,
    StopReason.TOOL_CALL: rt.STOP_REASON_TOOL_CALL,
    StopReason.AWAITING_APPROVAL: rt.STOP_REASON_AWAITING_APPROVAL,
    StopReason.ERROR: rt.STOP_REASON_ERROR,
    StopReason.CANCELLED: rt.STOP_REASON_CANCELLED,
    StopReason.MAX_ITERATIONS: rt.STOP_REASON_MAX_ITERATIONS,
}

_ROLES = {
    Role.SYSTEM: ses.ROLE_SYSTEM,
    Role.USER: ses.ROLE_USER,
    Role.ASSISTANT: ses.ROLE_ASSISTANT,
    Role.TOOL: ses.ROLE_TOOL,
}


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _usage(usage: Usage) -> rt.Usage:
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
                    stop_reason=_STOP_REASONS[body.stop_reason], usage=_usage(body.usage)
                )
            )
    return out


def session_to_proto(session: Session) -> ses.Session:
    return ses.Session(
        session_id=session.session_id,
        title=session.title,
        agent=session.agent,
        message_count=session.message_count,
        running_turn_id=session.running_turn_id or "",
        created_at=to_timestamp(session.created_at),
        last_activity_at=to_timestamp(session.last_activity_at),
    )


def message_to_proto(message: Message) -> ses.Message:
    return ses.Message(
        message_id=message.message_id,
        role=_ROLES[message.role],
        content=message.content,
        tool_calls=[
            ses.MessageToolCall(
                call_id=c.call_id, tool_name=c.tool_name, arguments=to_struct(c.arguments)
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id or "",
        created_at=to_timestamp(message.created_at),
        turn_id=message.turn_id or "",
        position=message.position,
        incomplete=message.incomplete,
    )
