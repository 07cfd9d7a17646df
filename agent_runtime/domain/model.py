"""Sessions, turns and messages: the conversation's persistent state."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from agent_runtime.domain.errors import InvalidInput

SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_session_id(session_id: str) -> None:
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidInput.field(
            "session_id",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
            reason="INVALID_SESSION_ID",
        )


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


@dataclass(slots=True)
class Session:
    session_id: str
    agent: str
    created_at: datetime
    last_activity_at: datetime
    title: str = ""
    message_count: int = 0
    running_turn_id: str | None = None

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
