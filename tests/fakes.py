"""In-memory fakes of the ports, for fast handler tests (cosmicpython style)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TypeVar

from agent_runtime.application.ports import ChatRequest
from agent_runtime.application.repositories import (
    ApprovalRepository,
    EventRepository,
    MessageRepository,
    SessionRepository,
    TurnRepository,
    UsageRepository,
)
from agent_runtime.domain.approval import Approval, ApprovalGrant, ApprovalStatus
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.errors import DomainError, StorageUnavailable, WriteConflict
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.model import (
    AgentSwitch,
    Message,
    Role,
    Session,
    ToolCallRecord,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
    UsageTotals,
)
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.domain.text import storable
from agent_runtime.domain.usage import UsageGroup, UsageGroupBy, UsageReport, usage_day

T = TypeVar("T")


@dataclass
class FakeTables:
    """The rows of one tenant's database."""

    sessions: dict[str, Session] = field(default_factory=dict)
    turns: dict[str, Turn] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    approvals: dict[tuple[str, str], Approval] = field(default_factory=dict)
    switches: list[tuple[str, AgentSwitch]] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    cancel_requested: set[str] = field(default_factory=set)
    grants: list[ApprovalGrant] = field(default_factory=list)
    usage_days: dict[str, UsageTotals] = field(default_factory=dict)


_TABLES = tuple(f.name for f in fields(FakeTables))


@dataclass
class FakeDatabase(FakeTables):
    """Committed rows. A FakeUnitOfWork works on a copy and writes it back on commit."""

    commits: int = 0
    commit_attempts: int = 0
    # The commit attempt (1 = the first ever) that raises instead of committing.
    failing_commits: dict[int, DomainError | Exception] = field(default_factory=dict)
    # The commit attempt that lands, then raises: a COMMIT whose acknowledgement was lost
    # (the connection dropped after the server committed).
    unacknowledged_commits: dict[int, DomainError | Exception] = field(default_factory=dict)
    # Called as each commit starts: lets a test see what else had happened by then.
    before_commit: Callable[[], None] | None = None
    # One writing unit of work at a time, as on SQLite (infrastructure/db/sqlite_writer.py):
    # taken at its first statement, given back when its transaction ends.
    writer: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    def copy_tables(self) -> FakeTables:
        return FakeTables(**{name: copy.deepcopy(getattr(self, name)) for name in _TABLES})

    def take_tables(self, tables: FakeTables) -> None:
        for name in _TABLES:
            setattr(self, name, getattr(tables, name))


class _Transaction:
    """What one unit of work sees of a FakeDatabase, as the real stores show it.

    Rows are read and written on a copy of the committed ones, taken at the first statement
    and kept until the transaction ends. A writing unit of work first takes the database's
    writer, so its copy is never stale and its commit loses no one else's rows; a reading one
    takes a snapshot and cannot write. Events wait in `events` until the commit, unseen even
    by their own unit of work, as the real outbox's do.
    """

    def __init__(self, db: FakeDatabase, *, writes: bool) -> None:
        self.db = db
        self.writes = writes
        self.rows: FakeTables | None = None
        self.events: list[Event] = []
        self._holding = False

    async def read(self) -> FakeTables:
        if self.rows is None:
            if self.writes:
                await self.db.writer.acquire()
                self._holding = True
            self.rows = self.db.copy_tables()
        return self.rows

    async def write(self) -> FakeTables:
        if not self.writes:
            raise StorageUnavailable(
                "the database is read-only here: a reading unit of work cannot write"
            )
        return await self.read()

    def end(self) -> None:
        self.rows = None
        self.events.clear()
        if self._holding:
            self._holding = False
            self.db.writer.release()


def _duplicate(what: str) -> WriteConflict:
    """What the real stores raise for a duplicate key (guarded_session.py)."""
    return WriteConflict(f"a concurrent request wrote this first: {what} exists")


class _FakeSessions:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def get(self, session_id: str) -> Session | None:
        return _copied((await self._tx.read()).sessions.get(session_id))

    async def add(self, session: Session) -> None:
        rows = await self._tx.write()
        if session.session_id in rows.sessions:
            raise _duplicate(f"session {session.session_id}")
        rows.sessions[session.session_id] = _stored(session)

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        session = (await self._tx.write()).sessions.get(session_id)
        if session is None:
            return ""  # as the real stores answer: not claimed, and no turn to name
        if session.running_turn_id is None:
            session.running_turn_id = turn_id
            return None
        return session.running_turn_id

    async def record_activity(
        self, session_id: str, at: datetime, *, message_count: int | None = None
    ) -> None:
        session = (await self._tx.write()).sessions.get(session_id)
        if session is None:
            return
        session.last_activity_at = at
        if message_count is not None:
            session.message_count = message_count

    async def release_turn(
        self,
        session_id: str,
        turn_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        count_usage: Usage | None = None,
    ) -> None:
        await self.record_activity(session_id, at, message_count=message_count)
        session = (await self._tx.write()).sessions.get(session_id)
        if session is None:
            return
        if session.running_turn_id == turn_id:
            session.running_turn_id = None
        if count_usage is not None:
            session.usage = session.usage.counting(count_usage)

    async def switch_agent(self, session_id: str, switch: AgentSwitch) -> None:
        rows = await self._tx.write()
        rows.sessions[session_id].agent = switch.to_agent
        rows.switches.append((session_id, _stored(switch)))

    async def update_settings(self, session: Session) -> None:
        stored = (await self._tx.write()).sessions[session.session_id]
        stored.title = session.title
        stored.instructions = session.instructions
        stored.tools = session.tools
        stored.generation = session.generation

    async def recent_agent_switches(
        self, session_id: str, limit: int
    ) -> tuple[list[AgentSwitch], int]:
        every = await self._switches(session_id)
        return every[-limit:] if limit else [], len(every)

    async def recent_agent_switches_of(
        self, session_ids: Sequence[str], limit: int
    ) -> dict[str, tuple[list[AgentSwitch], int]]:
        return {sid: await self.recent_agent_switches(sid, limit) for sid in session_ids}

    async def agent_switches(self, session_id: str, after_id: int, limit: int) -> list[AgentSwitch]:
        return [s for s in await self._switches(session_id) if s.switch_id > after_id][:limit]

    async def _switches(self, session_id: str) -> list[AgentSwitch]:
        """The session's, oldest first, numbered as the stores' keys are: in the order of all."""
        return [
            dataclasses.replace(s, switch_id=number)
            for number, (sid, s) in enumerate((await self._tx.read()).switches, start=1)
            if sid == session_id
        ]

    async def mark_deleted(self, session_id: str, at: datetime) -> None:
        session = (await self._tx.write()).sessions.get(session_id)
        if session is not None:
            session.deleted_at = at

    async def page_by_activity(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        live = sorted(
            (s for s in (await self._tx.read()).sessions.values() if s.deleted_at is None),
            key=lambda s: (s.last_activity_at, s.session_id),
            reverse=True,
        )
        if after is not None:
            live = [s for s in live if (s.last_activity_at, s.session_id) < after]
        return [copy.deepcopy(s) for s in live[:limit]]


class _FakeTurns:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def add(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        rows = await self._tx.write()
        if turn.turn_id in rows.turns:
            raise _duplicate(f"turn {turn.turn_id}")
        if turn.client_message_id is not None and any(
            (t.session_id, t.client_message_id) == (turn.session_id, turn.client_message_id)
            for t in rows.turns.values()
        ):
            raise _duplicate(f"a turn for client_message_id {turn.client_message_id}")
        rows.turns[turn.turn_id] = _stored(turn)
        rows.chunks[turn.turn_id] = copy.deepcopy(log or [])

    async def get(self, turn_id: str) -> Turn | None:
        return _copied((await self._tx.read()).turns.get(turn_id))

    async def save(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        rows = await self._tx.write()
        if turn.turn_id not in rows.turns:
            return  # an UPDATE that finds no row
        rows.turns[turn.turn_id] = _stored(turn)
        if log is not None:
            rows.chunks[turn.turn_id] = copy.deepcopy(log)

    async def end(self, turn: Turn, log: list[Chunk]) -> bool:
        rows = await self._tx.write()
        stored = rows.turns.get(turn.turn_id)
        if stored is None or stored.status is not TurnStatus.RUNNING:
            return False
        await self.save(turn, log)
        return True

    async def find_by_client_message_id(
        self, session_id: str, client_message_id: str
    ) -> Turn | None:
        return next(
            (
                copy.deepcopy(t)
                for t in (await self._tx.read()).turns.values()
                if t.session_id == session_id and t.client_message_id == storable(client_message_id)
            ),
            None,
        )

    async def page(
        self, session_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Turn]:
        found = sorted(
            (t for t in (await self._tx.read()).turns.values() if t.session_id == session_id),
            key=lambda t: (t.started_at, t.turn_id),
        )
        if after is not None:
            found = [t for t in found if (t.started_at, t.turn_id) > after]
        return copy.deepcopy(found[:limit])

    async def chunks(self, turn: Turn) -> list[Chunk]:
        return copy.deepcopy((await self._tx.read()).chunks.get(turn.turn_id, []))

    async def request_cancel(self, turn_id: str) -> None:
        rows = await self._tx.write()
        if turn_id in rows.turns:
            rows.cancel_requested.add(turn_id)

    async def abandoned_candidates(self, now: datetime, owner: str) -> list[Turn]:
        return [copy.deepcopy(t) for t in _abandoned(await self._tx.read(), now, owner)]

    async def interrupt(self, turns: list[Turn], now: datetime) -> list[Turn]:
        interrupted = []
        for found in turns:
            rows = await self._tx.write()
            turn = rows.turns.get(found.turn_id)
            if turn is None or turn.status is not TurnStatus.RUNNING:
                continue
            interrupted.append(found)
            turn.status = TurnStatus.INTERRUPTED
            turn.finished_at = now
            found.status = TurnStatus.INTERRUPTED
            session = rows.sessions.get(turn.session_id)
            if session is not None and session.running_turn_id == turn.turn_id:
                session.running_turn_id = None
        return interrupted


def _abandoned(rows: FakeTables, now: datetime, owner: str) -> list[Turn]:
    return [
        t
        for t in rows.turns.values()
        if t.running
        and ((t.lease_expires_at is not None and t.lease_expires_at < now) or t.owner == owner)
    ]


class _FakeMessages:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def add(self, message: Message) -> None:
        rows = await self._tx.write()
        for m in rows.messages:
            if m.message_id == message.message_id:
                raise _duplicate(f"message {message.message_id}")
            if (m.session_id, m.position) == (message.session_id, message.position):
                raise _duplicate(f"position {message.position} of session {message.session_id}")
        rows.messages.append(_stored(message))

    async def _of(self, session_id: str) -> list[Message]:
        return sorted(
            (m for m in (await self._tx.read()).messages if m.session_id == session_id),
            key=lambda m: m.position,
        )

    async def _visible(self, session_id: str) -> list[Message]:
        return [m for m in await self._of(session_id) if m.superseded_by_turn_id is None]

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        return copy.deepcopy((await self._visible(session_id))[-limit:] if limit > 0 else [])

    async def page(
        self,
        session_id: str,
        after_position: int,
        limit: int,
        *,
        include_superseded: bool = False,
    ) -> list[Message]:
        listed = (
            await self._of(session_id) if include_superseded else await self._visible(session_id)
        )
        later = [m for m in listed if m.position > after_position]
        return copy.deepcopy(later[:limit])

    async def get(self, session_id: str, message_id: str) -> Message | None:
        found = (m for m in await self._of(session_id) if m.message_id == message_id)
        return _copied(next(found, None))

    async def last_user_message(self, session_id: str) -> Message | None:
        users = [m for m in await self._visible(session_id) if m.role is Role.USER]
        return _copied(users[-1] if users else None)

    async def supersede_from(self, session_id: str, position: int, turn_id: str) -> int:
        rows = await self._tx.write()
        dropped = [
            m
            for m in rows.messages
            if m.session_id == session_id
            and m.position >= position
            and m.superseded_by_turn_id is None
        ]
        for message in dropped:
            message.superseded_by_turn_id = turn_id
        return len(dropped)

    async def find_tool_call(self, session_id: str, call_id: str) -> Message | None:
        return _copied(
            next(
                (
                    m
                    for m in await self._of(session_id)
                    # The stores look the call up by its id's own column.
                    if m.requested_call and storable(m.requested_call.call_id) == storable(call_id)
                ),
                None,
            )
        )

    async def find_tool_result(self, session_id: str, call_id: str) -> Message | None:
        found = (m for m in await self._of(session_id) if m.tool_call_id == storable(call_id))
        return _copied(next(found, None))

    async def replace_tool_call(self, message_id: str, call: ToolCallRecord) -> None:
        for message in (await self._tx.write()).messages:
            if message.message_id == message_id:
                message.tool_calls = (copy.deepcopy(call),)


class _FakeApprovals:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def add(self, approval: Approval) -> None:
        rows = await self._tx.write()
        approval = _stored(approval)
        key = (approval.session_id, approval.call_id)
        if key in rows.approvals:
            raise _duplicate(f"an approval for call {approval.call_id}")
        if any(a.approval_id == approval.approval_id for a in rows.approvals.values()):
            raise _duplicate(f"approval {approval.approval_id}")
        rows.approvals[key] = approval

    async def get(self, session_id: str, call_id: str) -> Approval | None:
        return _copied((await self._tx.read()).approvals.get((session_id, storable(call_id))))

    async def save(self, approval: Approval) -> None:
        """Updates the approval with that approval_id, as the real stores do."""
        rows = await self._tx.write()
        stored = next(
            (key for key, a in rows.approvals.items() if a.approval_id == approval.approval_id),
            None,
        )
        if stored is None:
            return  # an UPDATE that finds no row
        del rows.approvals[stored]
        approval = _stored(approval)
        rows.approvals[(approval.session_id, approval.call_id)] = approval

    async def open_for_session(self, session_id: str) -> list[Approval]:
        return [
            copy.deepcopy(a)
            for a in (await self._tx.read()).approvals.values()
            if a.session_id == session_id and a.status is ApprovalStatus.PENDING
        ]

    async def pending_page(
        self, session_id: str, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Approval]:
        found = sorted(
            (
                a
                for a in (await self._tx.read()).approvals.values()
                if a.session_id == session_id and a.is_pending(now)
            ),
            key=lambda a: (a.created_at, a.call_id),
        )
        if after is not None:
            found = [a for a in found if (a.created_at, a.call_id) > after]
        return copy.deepcopy(found[:limit])

    async def count_pending(self, session_id: str, now: datetime) -> int:
        return sum(
            1
            for a in (await self._tx.read()).approvals.values()
            if a.session_id == session_id and a.is_pending(now)
        )

    async def count_pending_of(self, session_ids: Sequence[str], now: datetime) -> dict[str, int]:
        return {session_id: await self.count_pending(session_id, now) for session_id in session_ids}

    async def add_grant(self, grant: ApprovalGrant) -> None:
        rows = await self._tx.write()
        if any(g.grant_id == grant.grant_id for g in rows.grants):
            raise _duplicate(f"grant {grant.grant_id}")
        rows.grants.append(grant)

    async def grants(self, session_id: str) -> list[ApprovalGrant]:
        return sorted(
            (
                g
                for g in (await self._tx.read()).grants
                if g.session_id == session_id and g.revoked_at is None
            ),
            key=lambda g: (g.granted_at, g.grant_id),
        )

    async def grants_of(self, session_ids: Sequence[str]) -> dict[str, list[ApprovalGrant]]:
        return {session_id: await self.grants(session_id) for session_id in session_ids}

    async def revoke_grant(self, session_id: str, grant_id: str, at: datetime) -> bool:
        rows = await self._tx.write()
        for index, grant in enumerate(rows.grants):
            if (grant.session_id, grant.grant_id) == (session_id, grant_id) and (
                grant.revoked_at is None
            ):
                rows.grants[index] = dataclasses.replace(grant, revoked_at=at)
                return True
        return False


_ENDED = (TurnStatus.COMPLETED, TurnStatus.FAILED, TurnStatus.CANCELLED)


class _FakeUsage:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def lock_admissions(self) -> None:
        await self._tx.write()  # the writer: one writing unit of work at a time, as on SQLite

    async def running_turns(self) -> int:
        return sum(1 for t in (await self._tx.read()).turns.values() if t.running)

    async def turns_started_since(self, since: datetime) -> tuple[int, datetime | None]:
        started = [t.started_at for t in (await self._tx.read()).turns.values()]
        recent = [at for at in started if at >= since]
        return len(recent), min(recent, default=None)

    async def tokens_on(self, day: str) -> int:
        return (await self._tx.read()).usage_days.get(day, UsageTotals()).total_tokens

    async def count_turn(self, day: str, usage: Usage) -> None:
        days = (await self._tx.write()).usage_days
        days[day] = days.get(day, UsageTotals()).counting(usage)

    async def report(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: UsageGroupBy,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> UsageReport:
        ended = [
            t
            for t in (await self._tx.read()).turns.values()
            if t.status in _ENDED
            and t.finished_at is not None
            and (start is None or t.finished_at >= start)
            and (end is None or t.finished_at < end)
        ]
        total = UsageTotals()
        groups: dict[str, UsageTotals] = {}
        for turn in ended:
            total = total.counting(turn.usage)
            match group_by:
                case UsageGroupBy.MODEL:
                    key: str | None = turn.model
                case UsageGroupBy.SESSION:
                    key = turn.session_id
                case UsageGroupBy.DAY:
                    key = usage_day(turn.finished_at)  # type: ignore[arg-type]
                case _:
                    key = None
            if key is not None:
                groups[key] = groups.get(key, UsageTotals()).counting(turn.usage)
        keys = [k for k in sorted(groups) if after is None or k > after][:limit]
        return UsageReport(total, [UsageGroup(k, groups[k]) for k in keys])


class _FakeEvents:
    def __init__(self, tx: _Transaction) -> None:
        self._tx = tx

    async def add(self, event: Event) -> None:
        self._tx.events.append(event)  # written by the commit, as the real outbox's

    async def after(
        self, event_id: int, *, session_id: str | None, types: frozenset[EventType], limit: int
    ) -> list[StoredEvent]:
        return [
            e
            for e in (await self._tx.read()).events
            if e.event_id > event_id
            and (not session_id or e.event.session_id == session_id)
            and (not types or e.event.type in types)
        ][:limit]

    async def last_id(self) -> int:
        events = (await self._tx.read()).events
        return events[-1].event_id if events else 0


def _stored(row: T) -> T:
    """A copy of `row` as the real stores keep it: its text columns as domain/text.py says
    (U+0000 as U+FFFD); what they keep as JSON (tool calls, arguments, event data, replay
    logs) as it is."""
    changes: dict[str, object] = {}
    for column in dataclasses.fields(row):  # type: ignore[arg-type]
        value = getattr(row, column.name)
        if isinstance(value, str):
            changes[column.name] = storable(value)
        elif isinstance(value, TurnError):  # the turn's error_reason and error_message
            changes[column.name] = _stored(value)
    return dataclasses.replace(copy.deepcopy(row), **changes)  # type: ignore[type-var]


def _copied(found: T | None) -> T | None:
    """A copy of what a read found: callers get rows, never the stored objects."""
    return None if found is None else copy.deepcopy(found)


class _FakeRepositories:
    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository
    usage: UsageRepository

    def __init__(self, db: FakeDatabase, *, writes: bool) -> None:
        self._db = db
        self._tx = _Transaction(db, writes=writes)
        self.sessions = _FakeSessions(self._tx)
        self.turns = _FakeTurns(self._tx)
        self.messages = _FakeMessages(self._tx)
        self.approvals = _FakeApprovals(self._tx)
        self.events = _FakeEvents(self._tx)
        self.usage = _FakeUsage(self._tx)
        self.closed = False

    async def __aexit__(self, *exc_info: object) -> None:
        self._tx.end()  # rolls back whatever is uncommitted
        self.closed = True


class FakeUnitOfWork(_FakeRepositories):
    def __init__(self, db: FakeDatabase) -> None:
        super().__init__(db, writes=True)

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        db, tx = self._db, self._tx
        if db.before_commit is not None:
            db.before_commit()
        db.commit_attempts += 1
        if (error := db.failing_commits.pop(db.commit_attempts, None)) is not None:
            raise error
        if tx.events:
            rows = await tx.read()  # the outbox's write takes the writer, as any statement
            for event in tx.events:
                rows.events.append(StoredEvent(len(rows.events) + 1, event))
        if tx.rows is not None:
            db.take_tables(tx.rows)
        db.commits += 1
        tx.end()
        if (error := db.unacknowledged_commits.pop(db.commit_attempts, None)) is not None:
            raise error
        if on_committed is not None:
            on_committed()

    async def rollback(self) -> None:
        self._tx.end()


class FakeReadUnitOfWork(_FakeRepositories):
    """A read-only unit of work: one snapshot of the committed rows, taken at its first read;
    its writes raise StorageUnavailable, as the real stores' do, and it has no commit."""

    def __init__(self, db: FakeDatabase) -> None:
        super().__init__(db, writes=False)

    async def __aenter__(self) -> FakeReadUnitOfWork:
        return self


class FakeUnitOfWorkFactory:
    """One FakeDatabase per tenant: a tenant's unit of work cannot reach another's rows."""

    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.databases = {DEFAULT_TENANT: db or FakeDatabase()}
        self.opened: list[FakeUnitOfWork | FakeReadUnitOfWork] = []
        self.opened_for: list[str] = []  # the tenant of each unit of work opened
        self.readers_for: list[str] = []  # the tenant of each read-only one among them
        self.lease_renewals = 0  # calls of renew_leases (one transaction each)

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
        return sorted(
            (tenant, turn.turn_id)
            for tenant, db in self.databases.items()
            for turn in _abandoned(db, now, owner)
        )

    async def renew_leases(
        self, running: Sequence[tuple[str, str]], owner: str, until: datetime
    ) -> list[tuple[str, str]]:
        self.lease_renewals += 1
        asked = []
        for tenant_id, turn_id in running:
            db = self.databases.get(tenant_id)
            turn = db.turns.get(turn_id) if db is not None else None
            if db is None or turn is None or not turn.running or turn.owner != owner:
                continue
            turn.lease_expires_at = until
            if turn_id in db.cancel_requested:
                asked.append((tenant_id, turn_id))
        return sorted(asked)

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
