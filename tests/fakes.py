"""In-memory fakes of the ports, for fast handler tests (cosmicpython style)."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent_runtime.application.ports import (
    ChatRequest,
    MessageRepository,
    SessionRepository,
    TurnRepository,
)
from agent_runtime.domain.errors import DomainError
from agent_runtime.domain.model import Message, Session, Turn, TurnStatus
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta


@dataclass
class FakeDatabase:
    """Committed state. A FakeUnitOfWork works on a copy and writes it back on commit."""

    sessions: dict[str, Session] = field(default_factory=dict)
    turns: dict[str, Turn] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    commits: int = 0
    fail_next_commit: DomainError | Exception | None = None


class _FakeSessions:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def get(self, session_id: str) -> Session | None:
        found = self._s.sessions.get(session_id)
        return replace(found) if found else None

    async def add(self, session: Session) -> None:
        assert session.session_id not in self._s.sessions
        self._s.sessions[session.session_id] = replace(session)

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        session = self._s.sessions[session_id]
        if session.running_turn_id is None:
            session.running_turn_id = turn_id
            return None
        return session.running_turn_id

    async def record_activity(
        self,
        session_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        release_turn: str | None = None,
    ) -> None:
        session = self._s.sessions[session_id]
        session.last_activity_at = at
        if message_count is not None:
            session.message_count = message_count
        if release_turn is not None and session.running_turn_id == release_turn:
            session.running_turn_id = None


class _FakeTurns:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def add(self, turn: Turn) -> None:
        self._s.turns[turn.turn_id] = replace(turn)

    async def get(self, turn_id: str) -> Turn | None:
        found = self._s.turns.get(turn_id)
        return replace(found) if found else None

    async def save(self, turn: Turn) -> None:
        assert turn.turn_id in self._s.turns
        self._s.turns[turn.turn_id] = replace(turn)

    async def interrupt_running(self) -> list[Turn]:
        found = [t for t in self._s.turns.values() if t.status is TurnStatus.RUNNING]
        for turn in found:
            turn.status = TurnStatus.INTERRUPTED
            session = self._s.sessions[turn.session_id]
            if session.running_turn_id == turn.turn_id:
                session.running_turn_id = None
        return [replace(t) for t in found]


class _FakeMessages:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def add(self, message: Message) -> None:
        assert all(
            (m.session_id, m.position) != (message.session_id, message.position)
            for m in self._s.messages
        ), "position taken"
        self._s.messages.append(replace(message))

    def _of(self, session_id: str) -> list[Message]:
        return sorted(
            (m for m in self._s.messages if m.session_id == session_id), key=lambda m: m.position
        )

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        return [replace(m) for m in self._of(session_id)[-limit:]]

    async def page(self, session_id: str, after_position: int, limit: int) -> list[Message]:
        return [replace(m) for m in self._of(session_id) if m.position > after_position][:limit]


class FakeUnitOfWork:
    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.closed = False

    def _begin(self) -> None:
        self._work = copy.deepcopy(self._db)
        self.sessions = _FakeSessions(self._work)
        self.turns = _FakeTurns(self._work)
        self.messages = _FakeMessages(self._work)

    async def __aenter__(self) -> FakeUnitOfWork:
        self._begin()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closed = True

    async def commit(self) -> None:
        if self._db.fail_next_commit is not None:
            error, self._db.fail_next_commit = self._db.fail_next_commit, None
            raise error
        self._db.sessions = self._work.sessions
        self._db.turns = self._work.turns
        self._db.messages = self._work.messages
        self._db.commits += 1
        self._begin()

    async def rollback(self) -> None:
        self._begin()


class FakeUnitOfWorkFactory:
    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.db = db or FakeDatabase()
        self.opened: list[FakeUnitOfWork] = []

    def __call__(self) -> FakeUnitOfWork:
        uow = FakeUnitOfWork(self.db)
        self.opened.append(uow)
        return uow


ScriptStep = Sequence[ModelEvent | BaseException]


class ScriptedModel:
    """A fake LLMClient playing one scripted answer per call; records every request.

    `on_call` runs when a call starts (tests use it to look at committed state).
    """

    def __init__(self, *answers: ScriptStep) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []
        self.on_call: Callable[[ChatRequest], None] | None = None

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        self.requests.append(request)
        if self.on_call is not None:
            self.on_call(request)
        for event in self.answers.pop(0):
            if isinstance(event, BaseException):
                raise event
            yield event


def text_answer(text: str) -> list[ModelEvent | BaseException]:
    words = text.split(" ")
    deltas: list[ModelEvent | BaseException] = [
        TextDelta(w if i == len(words) - 1 else w + " ") for i, w in enumerate(words)
    ]
    return [*deltas, ModelResponse(text)]
