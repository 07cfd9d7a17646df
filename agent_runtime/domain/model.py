"""Sessions, turns and messages: the conversation's persistent state."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.text import short_text_problem
from agent_runtime.domain.tools import ToolDefinition

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_session_id(session_id: str) -> None:
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidInput.field(
            "session_id",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
            reason="INVALID_SESSION_ID",
        )


MAX_ID_LENGTH = 128
# A model name, as a request, an agent or the settings give it (the turns.model column).
MAX_MODEL_NAME = 256


def is_valid_id(value: str) -> bool:
    """An id a client can name (turn, call, message ids): 1-128 characters, no control
    characters."""
    return bool(value) and short_text_problem(value, MAX_ID_LENGTH) is None


def validate_id(field: str, value: str) -> None:
    """Ids the server issued (turn, call, message ids): never empty, never huge."""
    if not is_valid_id(value):
        raise InvalidInput.field(
            field, f"must be 1-{MAX_ID_LENGTH} characters, with no control characters"
        )


def validate_short_text(field: str, value: str, max_chars: int) -> None:
    """A short field a client names (a key, a model, a title): see domain/text.py."""
    problem = short_text_problem(value, max_chars)
    if problem is not None:
        raise InvalidInput.field(field, problem)


class Role(Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class TurnStatus(Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class StopReason(Enum):
    END_TURN = "end_turn"
    TOOL_CALL = "tool_call"
    AWAITING_APPROVAL = "awaiting_approval"
    ERROR = "error"
    CANCELLED = "cancelled"
    MAX_ITERATIONS = "max_iterations"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Tokens added up over several turns (a session's, a tenant's over a time range)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    turns: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def counting(self, usage: Usage) -> UsageTotals:
        """These totals with one more turn that used `usage`."""
        return UsageTotals(
            self.prompt_tokens + usage.prompt_tokens,
            self.completion_tokens + usage.completion_tokens,
            self.turns + 1,
        )


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """A tool call as it stands in the history (arguments already validated as an object)."""

    call_id: str
    tool_name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class Message:
    message_id: str
    session_id: str
    position: int
    role: Role
    content: str
    created_at: datetime
    turn_id: str | None = None
    tool_calls: tuple[ToolCallRecord, ...] = ()
    tool_call_id: str | None = None
    incomplete: bool = False
    is_error: bool = False
    # An assistant message's reasoning, when its agent stores it; never sent to the model.
    reasoning: str = ""
    # The turn (a regenerate or an edit) that dropped this message from what the model sees.
    superseded_by_turn_id: str | None = None

    @property
    def requested_call(self) -> ToolCallRecord | None:
        """The tool call this assistant message asks for (one tool at a time)."""
        return self.tool_calls[0] if self.tool_calls else None


@dataclass(slots=True)
class Session:
    session_id: str
    agent: str
    created_at: datetime
    last_activity_at: datetime
    title: str = ""
    message_count: int = 0
    running_turn_id: str | None = None
    deleted_at: datetime | None = None
    # What the client set for every turn: instructions appended to the agent's system
    # prompt, tools it declares, generation defaults.
    instructions: str = ""
    tools: tuple[ToolDefinition, ...] = ()
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # The tokens of its ended turns, counted once per turn in the commit that ends it.
    usage: UsageTotals = field(default_factory=UsageTotals)

    def next_position(self) -> int:
        """Positions are 1-based and dense; only the turn holding the session appends."""
        self.message_count += 1
        return self.message_count


@dataclass(slots=True)
class TurnError:
    reason: str
    message: str


@dataclass(slots=True)
class Turn:
    turn_id: str
    session_id: str
    agent: str
    model: str
    started_at: datetime
    input_message_id: str | None = None
    client_message_id: str | None = None
    status: TurnStatus = TurnStatus.RUNNING
    stop_reason: StopReason | None = None
    usage: Usage = field(default_factory=Usage)
    error: TurnError | None = None
    finished_at: datetime | None = None
    # Fingerprint of the input, to tell a retry from a reuse of the same client_message_id.
    input_hash: str | None = None
    # The process running the turn and how long its claim lasts unless renewed.
    owner: str = ""
    lease_expires_at: datetime | None = None
    # What the turn did: model calls, tool calls the model made, and the milliseconds from
    # its start to the model's first output (None before any).
    model_calls: int = 0
    tool_calls: int = 0
    first_token_ms: int | None = None

    @property
    def running(self) -> bool:
        return self.status is TurnStatus.RUNNING

    def complete(self, stop_reason: StopReason, usage: Usage, now: datetime) -> None:
        self.status = TurnStatus.COMPLETED
        self.stop_reason = stop_reason
        self.usage = usage
        self.finished_at = now

    def fail(self, error: TurnError, usage: Usage, now: datetime) -> None:
        self.status = TurnStatus.FAILED
        self.stop_reason = StopReason.ERROR
        self.error = error
        self.usage = usage
        self.finished_at = now

    def cancel(self, usage: Usage, now: datetime) -> None:
        self.status = TurnStatus.CANCELLED
        self.stop_reason = StopReason.CANCELLED
        self.usage = usage
        self.finished_at = now

    def interrupt(self, error: TurnError, now: datetime) -> None:
        """The process running it stopped: the turn ends as failed, marked interrupted."""
        self.status = TurnStatus.INTERRUPTED
        self.stop_reason = StopReason.ERROR
        self.error = error
        self.finished_at = now


# The reason of an agent switch, a client's (SwitchAgent) or a model's (routing, switch_mode),
# is at most this many characters: the most recent switches are part of the session as
# GetSession and ListSessions send it, in one gRPC message.
MAX_SWITCH_REASON_CHARS = 1024


@dataclass(frozen=True, slots=True)
class AgentSwitch:
    from_agent: str
    to_agent: str
    reason: str
    switched_at: datetime
    turn_id: str | None = None
    # The store's key, increasing in the order switches are made (0 until stored): where a
    # page of switches ends. Not part of what the switch is.
    switch_id: int = field(default=0, compare=False)
