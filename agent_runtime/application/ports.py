"""What the use cases need from the outside world, as Protocols infrastructure implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agent_runtime.domain.model import Message, Session, Turn
from agent_runtime.domain.model_output import ModelEvent
from agent_runtime.domain.tools import ToolDefinition


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system_prompt: str
    history: Sequence[Message]
    tools: Sequence[ToolDefinition]


class LLMClient(Protocol):
    """A chat model. Yields TextDelta events as tokens arrive and one ModelResponse last.

    Failures raise a domain ModelError subclass; nothing else escapes.
    """

    def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]: ...


class SessionRepository(Protocol):
    async def get(self, session_id: str) -> Session | None: ...

    async def add(self, session: Session) -> None: ...

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        """Make `turn_id` the session's running turn if none runs.

        Returns None on success, else the id of the turn already running.
        """
        ...

    async def record_activity(
        self,
        session_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        release_turn: str | None = None,
    ) -> None:
        """Store last activity (and message_count); free the session if it runs `release_turn`."""
        ...


class TurnRepository(Protocol):
    async def add(self, turn: Turn) -> None: ...

    async def get(self, turn_id: str) -> Turn | None: ...

    async def save(self, turn: Turn) -> None: ...

    async def interrupt_running(self) -> list[Turn]:
        """Mark every RUNNING turn INTERRUPTED and free its session; return them."""
        ...


class MessageRepository(Protocol):
    async def add(self, message: Message) -> None: ...

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of the session, oldest first."""
        ...

    async def page(self, session_id: str, after_position: int, limit: int) -> list[Message]:
        """Up to `limit` messages with position > after_position, oldest first."""
        ...


class UnitOfWork(Protocol):
    """One database session and its transactions; `async with` closes it on every exit path.

    Leaving the block without commit() rolls back whatever is uncommitted.
    """

    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
