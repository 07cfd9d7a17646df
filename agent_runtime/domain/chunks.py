"""What a turn streams to the client, in domain terms (the api layer maps them to protobuf)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_runtime.domain.errors import DomainError
from agent_runtime.domain.model import StopReason, Usage


@dataclass(frozen=True, slots=True)
class TurnStarted:
    agent: str
    input_message_id: str


@dataclass(frozen=True, slots=True)
class AssistantDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call's arguments while the model writes them (not persisted)."""

    call_id: str
    tool_name: str
    arguments_fragment: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning while it thinks (not persisted here)."""

    text: str


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    message_id: str
    content: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    message_id: str
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    requires_approval: bool
    approval_reason: str


@dataclass(frozen=True, slots=True)
class AgentSwitched:
    from_agent: str
    to_agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class TurnError:
    """A failure after TurnStarted; `error` decides code, reason and retryability."""

    error: DomainError


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    stop_reason: StopReason
    usage: Usage


ChunkBody = (
    TurnStarted
    | AssistantDelta
    | ToolCallDelta
    | ReasoningDelta
    | AssistantMessage
    | ToolCall
    | AgentSwitched
    | TurnError
    | TurnCompleted
)


# Sent while the model streams: never in a turn's replay log, the first dropped from a full
# buffer.
DELTAS = (AssistantDelta, ToolCallDelta, ReasoningDelta)


@dataclass(frozen=True, slots=True)
class Chunk:
    session_id: str
    turn_id: str
    seq: int
    body: ChunkBody
