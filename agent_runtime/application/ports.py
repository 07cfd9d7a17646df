"""What the use cases need from the outside world besides storage (store_ports.py): the
model, and the wake-ups of commits. Protocols that infrastructure implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.model import (
    Message,
)
from agent_runtime.domain.model_output import ModelEvent
from agent_runtime.domain.tools import ToolDefinition


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system_prompt: str
    history: Sequence[Message]
    tools: Sequence[ToolDefinition]
    # Only the fields set here reach the model. A tool_choice only goes with tools, and a
    # named one only when that tool is among them (ModelStep makes sure).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # The runtime's own estimate of the prompt's tokens (uncalibrated; 0: not estimated),
    # compared with what the model reports to calibrate the next estimates.
    prompt_estimate: int = 0


class LLMClient(Protocol):
    """A chat model. Yields TextDelta events as tokens arrive (ReasoningText while it
    reasons, ToolCallFragment while it writes a tool call's arguments) and one ModelResponse
    last.

    Failures raise a domain ModelError subclass; nothing else escapes.
    """

    def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]: ...


@dataclass(frozen=True, slots=True)
class CommitScope:
    """What a commit with events touched, or what a waiter waits for.

    None at a level means every one of it: CommitScope(tenant) is every session of the
    tenant, CommitScope() everything. Two scopes overlap when they agree down to the first
    level either leaves open: a commit of turn X wakes the followers of X, the watchers of
    its session and of its tenant, and nobody of another turn, session or tenant.
    """

    tenant_id: str | None = None
    session_id: str | None = None  # only with a tenant
    turn_id: str | None = None  # only with a session

    def overlaps(self, other: CommitScope) -> bool:
        for mine, theirs in (
            (self.tenant_id, other.tenant_id),
            (self.session_id, other.session_id),
            (self.turn_id, other.turn_id),
        ):
            if mine is None or theirs is None:
                return True
            if mine != theirs:
                return False
        return True


EVERYTHING = CommitScope()


class EventSignal(Protocol):
    """Wakes event watchers and turn followers when events in their scope may have been
    committed.

    Read generation() before querying, then wait(generation, ..., scope): a notification
    for the scope that arrives between the query and the wait is not missed.
    """

    def generation(self) -> int: ...

    async def wait(self, after_generation: int, max_wait: float, scope: CommitScope) -> None:
        """Return once a notification overlapping `scope` came after `after_generation`
        (or possibly did: the signal may wake a waiter for nothing, never miss one), or
        after `max_wait`."""
        ...
