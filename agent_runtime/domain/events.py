"""Domain events: facts about committed state, written to the outbox in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class EventType(Enum):
    TURN_STARTED = "turn.started"
    TURN_COMPLETED = "turn.completed"
    TURN_FAILED = "turn.failed"
    TURN_CANCELLED = "turn.cancelled"
    MESSAGE_PERSISTED = "message.persisted"
    MODEL_REQUEST_STARTED = "model_request.started"
    MODEL_REQUEST_COMPLETED = "model_request.completed"
    MODEL_REQUEST_FAILED = "model_request.failed"
    TOOL_EXECUTION_REQUESTED = "tool_execution.requested"
    APPROVAL_REQUIRED = "approval.required"
    APPROVAL_DECIDED = "approval.decided"
    AGENT_SWITCHED = "agent.switched"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    session_id: str
    occurred_at: datetime
    turn_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back from the outbox: its id orders events in commit order."""

    event_id: int
    event: Event
