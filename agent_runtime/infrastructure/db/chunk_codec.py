"""Chunks <-> JSON, for the replay log stored on each turn (and the chunk relay)."""

from __future__ import annotations

from typing import Any

from agent_runtime.domain import chunks, errors
from agent_runtime.domain.model import StopReason, Usage
from agent_runtime.infrastructure import json_codec

# Error categories by name; a replayed error keeps the category (hence the gRPC code).
_ERROR_CLASSES: dict[str, type[errors.DomainError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.DomainError)
}


def encode(log: list[chunks.Chunk]) -> str:
    return json_codec.dumps([_encode(chunk) for chunk in log])


def decode(raw: str, session_id: str, turn_id: str) -> list[chunks.Chunk]:
    return [
        chunks.Chunk(session_id, turn_id, item["seq"], _decode_body(item))
        for item in json_codec.loads(raw or "[]")
    ]


def encode_one(chunk: chunks.Chunk) -> dict[str, Any]:
    """One chunk as a JSON-ready dict (its seq and body; the ids travel beside it)."""
    return _encode(chunk)


def decode_one(item: dict[str, Any], session_id: str, turn_id: str) -> chunks.Chunk:
    return chunks.Chunk(session_id, turn_id, item["seq"], _decode_body(item))


def _encode(chunk: chunks.Chunk) -> dict[str, Any]:
    body = chunk.body
    match body:
        case chunks.TurnStarted():
            data: dict[str, Any] = {"agent": body.agent, "input": body.input_message_id}
        case chunks.AssistantDelta():
            data = {"text": body.text}
        case chunks.ToolCallDelta():
            data = {
                "call_id": body.call_id,
                "tool_name": body.tool_name,
                "fragment": body.arguments_fragment,
            }
        case chunks.ReasoningDelta():
            data = {"text": body.text}
        case chunks.AssistantMessage():
            data = {"message_id": body.message_id, "content": body.content}
        case chunks.ToolCall():
            data = {
                "message_id": body.message_id,
                "call_id": body.call_id,
                "tool_name": body.tool_name,
                "arguments": body.arguments,
                "requires_approval": body.requires_approval,
                "approval_reason": body.approval_reason,
            }
        case chunks.AgentSwitched():
            data = {"from": body.from_agent, "to": body.to_agent, "reason": body.reason}
        case chunks.TurnError():
            error = body.error
            data = {
                "category": type(error).__name__,
                "reason": error.reason,
                "message": error.message,
                "retryable": error.retryable,
                "metadata": error.metadata,
            }
        case chunks.TurnCompleted():
            data = {
                "stop": body.stop_reason.value,
                "prompt_tokens": body.usage.prompt_tokens,
                "completion_tokens": body.usage.completion_tokens,
            }
    return {"seq": chunk.seq, "kind": type(body).__name__, **data}


def _decode_body(item: dict[str, Any]) -> chunks.ChunkBody:
    match item["kind"]:
        case "TurnStarted":
            return chunks.TurnStarted(item["agent"], item["input"])
        case "AssistantDelta":
            return chunks.AssistantDelta(item["text"])
        case "ToolCallDelta":
            return chunks.ToolCallDelta(item["call_id"], item["tool_name"], item["fragment"])
        case "ReasoningDelta":
            return chunks.ReasoningDelta(item["text"])
        case "AssistantMessage":
            return chunks.AssistantMessage(item["message_id"], item["content"])
        case "ToolCall":
            return chunks.ToolCall(
                item["message_id"],
                item["call_id"],
                item["tool_name"],
                item["arguments"],
                item["requires_approval"],
                item["approval_reason"],
            )
        case "AgentSwitched":
            return chunks.AgentSwitched(item["from"], item["to"], item["reason"])
        case "TurnError":
            cls = _ERROR_CLASSES.get(item["category"], errors.DomainError)
            error = errors.DomainError.__new__(cls)
            errors.DomainError.__init__(
                error,
                item["message"],
                reason=item["reason"],
                metadata=item["metadata"],
                retryable=item["retryable"],
            )
            if isinstance(error, errors.InvalidInput):
                error.violations = []
            return chunks.TurnError(error)
        case "TurnCompleted":
            return chunks.TurnCompleted(
                StopReason(item["stop"]), Usage(item["prompt_tokens"], item["completion_tokens"])
            )
    raise ValueError(f"unknown chunk kind {item['kind']!r} in a turn's replay log")
