"""What the model said, independent of how it was transported."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.domain.model import Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, as soon as the model produced it."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningText:
    """A piece of the model's reasoning ("reasoning_content" / "reasoning"), as it thinks."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """A piece of the arguments (JSON text) of the answer's first tool call, as the model
    writes them: all fragments of a call concatenate to its arguments."""

    call_id: str
    tool_name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class RequestedToolCall:
    """A tool call as the model produced it: arguments are still raw JSON text.

    invalid_arguments says why the model client would not keep the arguments (too large,
    nested too deep: they could not be stored and read back); arguments_json is then empty,
    and the call is refused with that reason as its tool error, for the model to read.
    """

    call_id: str
    tool_name: str
    arguments_json: str
    invalid_arguments: str = ""


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """The whole answer, once the model has finished."""

    content: str
    tool_calls: tuple[RequestedToolCall, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    # The model's reasoning before it answered, if it streamed one.
    reasoning: str = ""


ModelEvent = TextDelta | ReasoningText | ToolCallFragment | ModelResponse
# What is streamed while the model writes (everything but the final response).
StreamedOutput = TextDelta | ReasoningText | ToolCallFragment
