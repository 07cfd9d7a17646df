"""What the model said, independent of how it was transported."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.domain.model import Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, as soon as the model produced it."""

    text: str


@dataclass(frozen=True, slots=True)
class RequestedToolCall:
    """A tool call as the model produced it: arguments are still raw JSON text."""

    call_id: str
    tool_name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The whole answer, once the model has finished."""

    content: str
    tool_calls: tuple[RequestedToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None


ModelEvent = TextDelta | ModelResponse
