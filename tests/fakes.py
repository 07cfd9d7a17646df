"""In-memory fakes of the ports, for fast handler tests (cosmicpython style)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent_runtime.application.ports import (
    ApprovalRepository,
    ChatRequest,
    EventRepository,
    MessageRepository,
    SessionRepository,
    TurnRepository,
)
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.errors import DomainError
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    ApprovalStatus,
    Message,
    Session,
    ToolCallRecord,
    Turn,
    TurnStatus,
)
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.domain.tenants import DEFAULT_TENANT


@dataclass
class FakeDatabase:
    """Committed state. A FakeUnitOfWork works on a copy and writes it back on commit."""

    sessions: dict[str, Session] = field(default_factory=dict)
    turns: dict[str, Turn] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    approvals: dict[tuple[str, str], Approval] = field(default_factory=dict)
    switches: list[tuple[str, AgentSwitch]] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    cancel_requested: set[str] = field(default_factory=set)
    commits: int = 0
    commit_attempts: int = 0
    # The commit attempt (1 = the first ever) that raises instead of committing.
    failing_commits: dict[int, DomainError | Exception] = field(default_factory=dict)
    # Called as each commit starts: lets a test see what else had happened by then.
    before_commit: Callable[[], None] | None = None


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

    async def switch_agent(self, session_id: str, switch: AgentSwitch) -> None:
        self._s.sessions[session_id].agent = switch.to_agent
        self._s.switches.append((session_id, switch))

    async def agent_history(self, session_id: str) -> list[AgentSwitch]:
        return [s for sid, s in self._s.switches if sid == session_id]

    async def mark_deleted(self, session_id: str, at: datetime) -> None:
        self._s.sessions[session_id].deleted_at = at

    async def page_by_activity(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        live = sorted(
            (s for s in self._s.sessions.values() if s.deleted_at is None),
            key=lambda s: (s.last_activity_at, s.session_id),
            reverse=True,
        )
        if after is not None:
            live = [s for s in live if (s.last_activity_at, s.session_id) < after]
        return [replace(s) for s in live[:limit]]


class _FakeTurns:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def add(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        self._s.turns[turn.turn_id] = replace(turn)
        self._s.chunks[turn.turn_id] = list(log or [])

    async def get(self, turn_id: str) -> Turn | None:
        found = self._s.turns.get(turn_id)
        return replace(found) if found else None

    async def save(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        assert turn.turn_id in self._s.turns
        self._s.turns[turn.turn_id] = replace(turn)
        if log is not None:
            self._s.chunks[turn.turn_id] = list(log)

    async def find_by_client_message_id(
        self, session_id: str, client_message_id: str
    ) -> Turn | None:
        return next(
            (
                replace(t)
                for t in self._s.turns.values()
                if t.session_id == session_id and t.client_message_id == client_message_id
            ),
            None,
        )

    async def save_chunks(self, turn: Turn, log: list[Chunk]) -> None:
        self._s.chunks[turn.turn_id] = list(log)

    async def chunks(self, turn: Turn) -> list[Chunk]:
        return list(self._s.chunks.get(turn.turn_id, []))

    async def request_cancel(self, turn_id: str) -> None:
        self._s.cancel_requested.add(turn_id)

    async def renew_leases(self, turn_ids: list[str], until: datetime) -> list[str]:
        mine = [t for t in self._s.turns.values() if t.turn_id in turn_ids and t.running]
        for turn in mine:
            turn.lease_expires_at = until
        return [t.turn_id for t in mine if t.turn_id in self._s.cancel_requested]

    async def abandoned_candidates(self, now: datetime, owner: str) -> list[Turn]:
        return [
            replace(t)
            for t in self._s.turns.values()
            if t.running and ((t.lease_expires_at or now) < now or t.owner == owner)
        ]

    async def interrupt(self, turns: list[Turn], now: datetime) -> list[Turn]:
        interrupted = []
        for found in turns:
            turn = self._s.turns[found.turn_id]
            if turn.status is not TurnStatus.RUNNING:
                continue
            interrupted.append(found)
            turn.status = TurnStatus.INTERRUPTED
            found.status = TurnStatus.INTERRUPTED
            session = self._s.sessions[turn.session_id]
            if session.running_turn_id == turn.turn_id:
                session.running_turn_id = None
        return interrupted


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

    async def find_tool_call(self, session_id: str, call_id: str) -> Message | None:
        return next(
            (
                replace(m)
                for m in self._of(session_id)
                if m.requested_call and m.requested_call.call_id == call_id
            ),
            None,
        )

    async def find_tool_result(self, session_id: str, call_id: str) -> Message | None:
        return next((replace(m) for m in self._of(session_id) if m.tool_call_id == call_id), None)

    async def replace_tool_call(self, message_id: str, call: ToolCallRecord) -> None:
        for message in self._s.messages:
            if message.message_id == message_id:
                message.tool_calls = (call,)


class _FakeApprovals:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def add(self, approval: Approval) -> None:
        key = (approval.session_id, approval.call_id)
        assert key not in self._s.approvals
        self._s.approvals[key] = replace(approval)

    async def get(self, session_id: str, call_id: str) -> Approval | None:
        found = self._s.approvals.get((session_id, call_id))
        return replace(found) if found else None

    async def save(self, approval: Approval) -> None:
        self._s.approvals[(approval.session_id, approval.call_id)] = replace(approval)

    async def open_for_session(self, session_id: str) -> list[Approval]:
        return [
            replace(a)
            for (sid, _), a in self._s.approvals.items()
            if sid == session_id and a.status is ApprovalStatus.PENDING
        ]

    async def pending_page(
        self, session_id: str, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Approval]:
        found = sorted(
            (
                a
                for a in self._s.approvals.values()
                if a.session_id == session_id and a.is_pending(now)
            ),
            key=lambda a: (a.created_at, a.call_id),
        )
        if after is not None:
            found = [a for a in found if (a.created_at, a.call_id) > after]
        return [replace(a) for a in found[:limit]]

    async def count_pending(self, session_id: str, now: datetime) -> int:
        return sum(
            1
            for a in self._s.approvals.values()
            if a.session_id == session_id and a.is_pending(now)
        )


class _FakeEvents:
    def __init__(self, state: FakeDatabase) -> None:
        self._s = state

    async def add(self, event: Event) -> None:
        self._s.events.append(StoredEvent(len(self._s.events) + 1, event))

    async def after(
        self, event_id: int, *, session_id: str | None, types: frozenset[EventType], limit: int
    ) -> list[StoredEvent]:
        return [
            e
            for e in self._s.events
            if e.event_id > event_id
            and (not session_id or e.event.session_id == session_id)
            and (not types or e.event.type in types)
        ][:limit]

    async def last_id(self) -> int:
        return len(self._s.events)


class FakeUnitOfWork:
    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.closed = False

    def _begin(self) -> None:
        self._work = copy.deepcopy(self._db)
        self.sessions = _FakeSessions(self._work)
        self.turns = _FakeTurns(self._work)
        self.messages = _FakeMessages(self._work)
        self.approvals = _FakeApprovals(self._work)
        self.events = _FakeEvents(self._work)

    async def __aenter__(self) -> FakeUnitOfWork:
        self._begin()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closed = True

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        if self._db.before_commit is not None:
            self._db.before_commit()
        self._db.commit_attempts += 1
        if (error := self._db.failing_commits.pop(self._db.commit_attempts, None)) is not None:
            raise error
        self._db.sessions = self._work.sessions
        self._db.turns = self._work.turns
        self._db.messages = self._work.messages
        self._db.approvals = self._work.approvals
        self._db.switches = self._work.switches
        self._db.events = self._work.events
        self._db.chunks = self._work.chunks
        self._db.cancel_requested = self._work.cancel_requested
        self._db.commits += 1
        self._begin()
        if on_committed is not None:
            on_committed()

    async def rollback(self) -> None:
        self._begin()


class FakeReadUnitOfWork:
    """A read-only unit of work: reads a copy of the committed state; writes through its
    repositories stay in that copy, and it has no commit."""

    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository

    def __init__(self, db: FakeDatabase) -> None:
        self._reading = FakeUnitOfWork(db)
        self.closed = False

    async def __aenter__(self) -> FakeReadUnitOfWork:
        await self._reading.__aenter__()
        self.sessions = self._reading.sessions
        self.turns = self._reading.turns
        self.messages = self._reading.messages
        self.approvals = self._reading.approvals
        self.events = self._reading.events
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.closed = True


class FakeUnitOfWorkFactory:
    """One FakeDatabase per tenant: a tenant's unit of work cannot reach another's rows."""

    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.databases = {DEFAULT_TENANT: db or FakeDatabase()}
        self.opened: list[FakeUnitOfWork | FakeReadUnitOfWork] = []
        self.opened_for: list[str] = []  # the tenant of each unit of work opened
        self.readers_for: list[str] = []  # the tenant of each read-only one among them

    @property
    def db(self) -> FakeDatabase:
        return self.databases[DEFAULT_TENANT]

    def __call__(self, tenant_id: str) -> FakeUnitOfWork:
        uow = FakeUnitOfWork(self.databases.setdefault(tenant_id, FakeDatabase()))
        self.opened.append(uow)
        self.opened_for.append(tenant_id)
        return uow

    def reader(self, tenant_id: str) -> FakeReadUnitOfWork:
        uow = FakeReadUnitOfWork(self.databases.setdefault(tenant_id, FakeDatabase()))
        self.opened.append(uow)
        self.opened_for.append(tenant_id)
        self.readers_for.append(tenant_id)
        return uow

    async def abandoned_turn_candidates(self, now: datetime, owner: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for tenant, db in self.databases.items():
            found += [
                (tenant, t.turn_id) for t in await _FakeTurns(db).abandoned_candidates(now, owner)
            ]
        return sorted(found)

    async def count_pending_approvals(self, now: datetime) -> int:
        return sum(
            1 for db in self.databases.values() for a in db.approvals.values() if a.is_pending(now)
        )


ScriptStep = Sequence[ModelEvent | BaseException]


class ScriptedModel:
    """A fake LLMClient playing one scripted answer per call; records every request.

    `on_call` runs when a call starts, i.e. when the request has gone out.
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


class FakeChunkRelay:
    """An in-memory chunk relay: the test delivers chunks to the followers subscribed."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Chunk]] = []
        self.subscribed: dict[tuple[str, str, str], FakeRelayedChunks] = {}
        self.subscriptions = 0  # ever made

    def publisher(self, tenant_id: str, session_id: str, turn_id: str) -> FakeTurnPublisher:
        return FakeTurnPublisher(self, tenant_id)

    @asynccontextmanager
    async def subscribe(
        self, tenant_id: str, session_id: str, turn_id: str
    ) -> AsyncIterator[FakeRelayedChunks]:
        key = (tenant_id, session_id, turn_id)
        self.subscriptions += 1
        self.subscribed[key] = received = FakeRelayedChunks()
        try:
            yield received
        finally:
            del self.subscribed[key]

    def deliver(self, tenant_id: str, chunk: Chunk) -> None:
        self.subscribed[(tenant_id, chunk.session_id, chunk.turn_id)].push(chunk)


class FakeTurnPublisher:
    def __init__(self, relay: FakeChunkRelay, tenant_id: str) -> None:
        self._relay = relay
        self._tenant_id = tenant_id

    def publish(self, chunk: Chunk) -> None:
        self._relay.published.append((self._tenant_id, chunk))


class FakeRelayedChunks:
    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self._arrived = asyncio.Event()

    def push(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._arrived.set()

    def take(self) -> Chunk | None:
        if not self._chunks:
            self._arrived.clear()
            return None
        return self._chunks.pop(0)

    async def arrival(self) -> None:
        await self._arrived.wait()
