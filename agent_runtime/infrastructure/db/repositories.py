"""Repositories: domain objects in, domain objects out, SQL in between.

Each statement runs at once on the unit of work's database (Core, not ORM unit-of-work
flushing), so what is written and when is visible in the code.

The statements a turn runs are built once, at import, with named parameters (`key_*` in
WHERE clauses; SET and VALUES take the column names), and executed with a dict of values.
Building a Core statement per call (`insert(t).values(...)`, `x == value`) cost 80-190 µs
of CPU each, several times what SQLite takes to run it; a prebuilt one costs about 20 µs
(docs/benchmarks/README.md). Rare statements with a variable shape (paging, filters) are
still built per call, where reading them matters more. The prebuilt ones are marked
`prepared(...)`: on SQLite they then run on the driver's connection, compiled once, with no
SQLAlchemy execution layer in between (prepared_statements.py).

SQLAlchemy quietly ignores a value whose key names neither a column nor a parameter of the
statement: a misspelt SET or VALUES key would leave its column unwritten. So every INSERT
and UPDATE is checked as it is compiled, which SQLAlchemy does once per statement and set
of keys (its compiled cache): an unknown key fails its first execution, and the check
costs nothing afterwards.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from agent_runtime.application.ports import CommitScope
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    ApprovalStatus,
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
)
from agent_runtime.infrastructure.db import chunk_codec, commit_payload
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.prepared_statements import prepared
from agent_runtime.infrastructure.db.tables import (
    agent_switches,
    approvals,
    events,
    messages,
    sessions,
    turns,
)


# For every INSERT and UPDATE the process compiles (from here they are all ours).
@compiles(Insert)
@compiles(Update)
def _every_key_taken(statement: Insert | Update, compiler: SQLCompiler, **kw: Any) -> str:
    """The statement as SQLAlchemy compiles it, if it takes every key it is executed with."""
    sql: str = getattr(compiler, f"visit_{statement.__visit_name__}")(statement, **kw)
    unknown = set(compiler.column_keys or ()) - compiler.binds.keys()
    if unknown:
        raise CompileError(
            f"{statement.__visit_name__.upper()} {statement.table}: no column or parameter"
            f" named {', '.join(sorted(map(repr, unknown)))}"
        )
    return sql


# One session of the tenant: key_tenant, key_session.
_THE_SESSION = (
    sessions.c.tenant_id == bindparam("key_tenant"),
    sessions.c.session_id == bindparam("key_session"),
)
_GET_SESSION = prepared(select(sessions).where(*_THE_SESSION))
_INSERT_SESSION = prepared(insert(sessions))
_UPDATE_SESSION = prepared(update(sessions).where(*_THE_SESSION))  # SET: the columns given
_CLAIM_SESSION = prepared(
    update(sessions)
    .where(*_THE_SESSION, sessions.c.running_turn_id.is_(None))
    .values(running_turn_id=bindparam("key_turn"))
)
_RUNNING_TURN = prepared(select(sessions.c.running_turn_id).where(*_THE_SESSION))
# Frees the session only if turn key_turn still holds it; SET also the other columns given.
_RELEASE_SESSION = prepared(
    update(sessions)
    .where(*_THE_SESSION)
    .values(
        running_turn_id=case(
            (sessions.c.running_turn_id == bindparam("key_turn"), None),
            else_=sessions.c.running_turn_id,
        )
    )
)


class SqlAlchemySessionRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def get(self, session_id: str) -> Session | None:
        row = (await self._db.execute(_GET_SESSION, self._key(session_id))).first()
        return None if row is None else _session_from_row(row)

    async def add(self, session: Session) -> None:
        await self._db.execute(
            _INSERT_SESSION,
            {
                "tenant_id": self._tenant,
                "session_id": session.session_id,
                "agent": session.agent,
                "title": session.title,
                "message_count": session.message_count,
                "running_turn_id": session.running_turn_id,
                "created_at": session.created_at,
                "last_activity_at": session.last_activity_at,
            },
        )

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        result: CursorResult[Any] = await self._db.execute(
            _CLAIM_SESSION, {**self._key(session_id), "key_turn": turn_id}
        )
        if result.rowcount == 1:
            return None
        running = await self._db.scalar(_RUNNING_TURN, self._key(session_id))
        return str(running or "")

    async def record_activity(
        self,
        session_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        release_turn: str | None = None,
    ) -> None:
        values: dict[str, Any] = {**self._key(session_id), "last_activity_at": at}
        if message_count is not None:
            values["message_count"] = message_count
        if release_turn is None:
            await self._db.execute(_UPDATE_SESSION, values)
        else:  # one statement: free the session only if this turn still holds it
            await self._db.execute(_RELEASE_SESSION, {**values, "key_turn": release_turn})

    async def switch_agent(self, session_id: str, switch: AgentSwitch) -> None:
        await self._db.execute(_UPDATE_SESSION, {**self._key(session_id), "agent": switch.to_agent})
        await self._db.execute(
            insert(agent_switches).values(
                tenant_id=self._tenant,
                session_id=session_id,
                from_agent=switch.from_agent,
                to_agent=switch.to_agent,
                reason=switch.reason,
                turn_id=switch.turn_id,
                switched_at=switch.switched_at,
            )
        )

    async def agent_history(self, session_id: str) -> list[AgentSwitch]:
        rows = (
            await self._db.execute(
                select(agent_switches)
                .where(
                    agent_switches.c.tenant_id == self._tenant,
                    agent_switches.c.session_id == session_id,
                )
                .order_by(agent_switches.c.switch_id)
            )
        ).all()
        return [
            AgentSwitch(r.from_agent, r.to_agent, r.reason, r.switched_at, r.turn_id) for r in rows
        ]

    async def mark_deleted(self, session_id: str, at: datetime) -> None:
        await self._db.execute(_UPDATE_SESSION, {**self._key(session_id), "deleted_at": at})

    async def page_by_activity(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        query = select(sessions).where(
            sessions.c.tenant_id == self._tenant, sessions.c.deleted_at.is_(None)
        )
        if after is not None:
            at, key = after
            query = query.where(
                or_(
                    sessions.c.last_activity_at < at,
                    and_(sessions.c.last_activity_at == at, sessions.c.session_id < key),
                )
            )
        query = query.order_by(
            sessions.c.last_activity_at.desc(), sessions.c.session_id.desc()
        ).limit(limit)
        return [_session_from_row(row) for row in (await self._db.execute(query)).all()]

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_session": session_id}


# One turn of the tenant: key_tenant, key_turn.
_THE_TURN = (turns.c.tenant_id == bindparam("key_tenant"), turns.c.turn_id == bindparam("key_turn"))
_INSERT_TURN = prepared(insert(turns))
_GET_TURN = prepared(select(turns).where(*_THE_TURN))
_UPDATE_TURN = prepared(update(turns).where(*_THE_TURN))  # SET: the columns given
_TURN_CHUNKS = prepared(select(turns.c.chunks).where(*_THE_TURN))
_TURN_BY_CLIENT_MESSAGE_ID = prepared(
    select(turns).where(
        turns.c.tenant_id == bindparam("key_tenant"),
        turns.c.session_id == bindparam("key_session"),
        turns.c.client_message_id == bindparam("key_client_message_id"),
    )
)


class SqlAlchemyTurnRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        await self._db.execute(
            _INSERT_TURN,
            {
                **_turn_values(turn),
                "tenant_id": self._tenant,
                "chunks": chunk_codec.encode(log or []),
            },
        )

    async def get(self, turn_id: str) -> Turn | None:
        row = (await self._db.execute(_GET_TURN, self._key(turn_id))).first()
        return None if row is None else _turn_from_row(row)

    async def save(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        values = _turn_values(turn)
        del values["turn_id"]
        if log is not None:
            values["chunks"] = chunk_codec.encode(log)
        await self._db.execute(_UPDATE_TURN, {**values, **self._key(turn.turn_id)})

    async def find_by_client_message_id(
        self, session_id: str, client_message_id: str
    ) -> Turn | None:
        key = {
            "key_tenant": self._tenant,
            "key_session": session_id,
            "key_client_message_id": client_message_id,
        }
        row = (await self._db.execute(_TURN_BY_CLIENT_MESSAGE_ID, key)).first()
        return None if row is None else _turn_from_row(row)

    async def save_chunks(self, turn: Turn, log: list[Chunk]) -> None:
        await self._db.execute(
            _UPDATE_TURN, {**self._key(turn.turn_id), "chunks": chunk_codec.encode(log)}
        )

    async def chunks(self, turn: Turn) -> list[Chunk]:
        raw = await self._db.scalar(_TURN_CHUNKS, self._key(turn.turn_id))
        return chunk_codec.decode(raw or "[]", turn.session_id, turn.turn_id)

    async def request_cancel(self, turn_id: str) -> None:
        await self._db.execute(_UPDATE_TURN, {**self._key(turn_id), "cancel_requested": True})

    async def renew_leases(self, turn_ids: list[str], until: datetime) -> list[str]:
        if not turn_ids:
            return []
        running = (
            turns.c.tenant_id == self._tenant,
            turns.c.turn_id.in_(turn_ids),
            turns.c.status == TurnStatus.RUNNING.value,
        )
        await self._db.execute(update(turns).where(*running).values(lease_expires_at=until))
        rows = await self._db.scalars(
            select(turns.c.turn_id).where(*running, turns.c.cancel_requested.is_(True))
        )
        return list(rows)

    async def abandoned_candidates(self, now: datetime, owner: str) -> list[Turn]:
        rows = (
            await self._db.execute(
                select(turns).where(
                    turns.c.tenant_id == self._tenant, *abandoned_turn_candidates(now, owner)
                )
            )
        ).all()
        return [_turn_from_row(row) for row in rows]

    async def interrupt(self, candidates: list[Turn], now: datetime) -> list[Turn]:
        interrupted = []
        for turn in candidates:
            # Conditional: of two processes reclaiming the same turn, one wins (on PostgreSQL
            # the second waits for the first and then finds the turn no longer running).
            result: CursorResult[Any] = await self._db.execute(
                update(turns)
                .where(*self._turn(turn.turn_id), turns.c.status == TurnStatus.RUNNING.value)
                .values(status=TurnStatus.INTERRUPTED.value, finished_at=now)
            )
            if result.rowcount != 1:
                continue
            await self._db.execute(
                update(sessions)
                .where(
                    sessions.c.tenant_id == self._tenant,
                    sessions.c.session_id == turn.session_id,
                    sessions.c.running_turn_id == turn.turn_id,
                )
                .values(running_turn_id=None)
            )
            turn.status = TurnStatus.INTERRUPTED
            interrupted.append(turn)
        return interrupted

    def _turn(self, turn_id: str) -> tuple[ColumnElement[bool], ...]:
        return (turns.c.tenant_id == self._tenant, turns.c.turn_id == turn_id)

    def _key(self, turn_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_turn": turn_id}


# Messages of one session of the tenant: key_tenant, key_session.
_SESSION_MESSAGES = (
    messages.c.tenant_id == bindparam("key_tenant"),
    messages.c.session_id == bindparam("key_session"),
)
_INSERT_MESSAGE = prepared(insert(messages))
_RECENT_MESSAGES = prepared(
    select(messages)
    .where(*_SESSION_MESSAGES)
    .order_by(messages.c.position.desc())
    .limit(bindparam("key_limit"))
)
_TOOL_CALL_MESSAGE = prepared(
    select(messages).where(
        *_SESSION_MESSAGES, messages.c.requested_call_id == bindparam("key_call")
    )
)
_TOOL_RESULT_MESSAGE = prepared(
    select(messages).where(*_SESSION_MESSAGES, messages.c.tool_call_id == bindparam("key_call"))
)


class SqlAlchemyMessageRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, message: Message) -> None:
        call = message.requested_call
        await self._db.execute(
            _INSERT_MESSAGE,
            {
                "tenant_id": self._tenant,
                "message_id": message.message_id,
                "session_id": message.session_id,
                "position": message.position,
                "role": message.role.value,
                "content": message.content,
                "tool_calls": _tool_calls_json(message.tool_calls),
                "tool_call_id": message.tool_call_id,
                "turn_id": message.turn_id,
                "incomplete": message.incomplete,
                "created_at": message.created_at,
                "is_error": message.is_error,
                "requested_call_id": call.call_id if call else None,
            },
        )

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        key = {**self._key(session_id), "key_limit": limit}
        rows = (await self._db.execute(_RECENT_MESSAGES, key)).all()
        return [_message_from_row(row) for row in reversed(rows)]

    async def page(self, session_id: str, after_position: int, limit: int) -> list[Message]:
        rows = (
            await self._db.execute(
                select(messages)
                .where(*self._session(session_id), messages.c.position > after_position)
                .order_by(messages.c.position)
                .limit(limit)
            )
        ).all()
        return [_message_from_row(row) for row in rows]

    async def find_tool_call(self, session_id: str, call_id: str) -> Message | None:
        key = {**self._key(session_id), "key_call": call_id}
        row = (await self._db.execute(_TOOL_CALL_MESSAGE, key)).first()
        return None if row is None else _message_from_row(row)

    async def find_tool_result(self, session_id: str, call_id: str) -> Message | None:
        key = {**self._key(session_id), "key_call": call_id}
        row = (await self._db.execute(_TOOL_RESULT_MESSAGE, key)).first()
        return None if row is None else _message_from_row(row)

    async def replace_tool_call(self, message_id: str, call: ToolCallRecord) -> None:
        await self._db.execute(
            update(messages)
            .where(messages.c.tenant_id == self._tenant, messages.c.message_id == message_id)
            .values(tool_calls=_tool_calls_json((call,)), requested_call_id=call.call_id)
        )

    def _session(self, session_id: str) -> tuple[ColumnElement[bool], ...]:
        return (messages.c.tenant_id == self._tenant, messages.c.session_id == session_id)

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_session": session_id}


_INSERT_APPROVAL = prepared(insert(approvals))
_GET_APPROVAL = prepared(
    select(approvals).where(
        approvals.c.tenant_id == bindparam("key_tenant"),
        approvals.c.session_id == bindparam("key_session"),
        approvals.c.call_id == bindparam("key_call"),
    )
)
_UPDATE_APPROVAL = prepared(
    update(approvals).where(  # SET: the columns given
        approvals.c.tenant_id == bindparam("key_tenant"),
        approvals.c.approval_id == bindparam("key_approval"),
    )
)


class SqlAlchemyApprovalRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, approval: Approval) -> None:
        await self._db.execute(
            _INSERT_APPROVAL, {**_approval_values(approval), "tenant_id": self._tenant}
        )

    async def get(self, session_id: str, call_id: str) -> Approval | None:
        key = {"key_tenant": self._tenant, "key_session": session_id, "key_call": call_id}
        row = (await self._db.execute(_GET_APPROVAL, key)).first()
        return None if row is None else _approval_from_row(row)

    async def save(self, approval: Approval) -> None:
        values = _approval_values(approval)
        key = {"key_tenant": self._tenant, "key_approval": values.pop("approval_id")}
        await self._db.execute(_UPDATE_APPROVAL, {**values, **key})

    async def open_for_session(self, session_id: str) -> list[Approval]:
        rows = (
            await self._db.execute(
                select(approvals).where(
                    *self._session(session_id),
                    approvals.c.status == ApprovalStatus.PENDING.value,
                )
            )
        ).all()
        return [_approval_from_row(row) for row in rows]

    async def pending_page(
        self, session_id: str, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Approval]:
        query = select(approvals).where(
            *self._session(session_id),
            approvals.c.status == ApprovalStatus.PENDING.value,
            approvals.c.expires_at > now,
        )
        if after is not None:
            at, key = after
            query = query.where(
                or_(
                    approvals.c.created_at > at,
                    and_(approvals.c.created_at == at, approvals.c.call_id > key),
                )
            )
        query = query.order_by(approvals.c.created_at, approvals.c.call_id).limit(limit)
        return [_approval_from_row(row) for row in (await self._db.execute(query)).all()]

    async def count_pending(self, session_id: str, now: datetime) -> int:
        count = await self._db.scalar(
            count_pending_approvals(now).where(*self._session(session_id))
        )
        return int(count or 0)

    def _session(self, session_id: str) -> tuple[ColumnElement[bool], ...]:
        return (approvals.c.tenant_id == self._tenant, approvals.c.session_id == session_id)


# The LISTEN/NOTIFY channel of commits with events (commit_notifications.py listens).
COMMIT_CHANNEL = "agent_runtime_commits"
# Our namespace ("agnt") for PostgreSQL's transaction-level advisory locks around outbox
# writes, one lock per tenant: WatchEvents reads one tenant's events, so ids need to become
# visible in order only within a tenant, and tenants need not wait for each other's commits.
OUTBOX_LOCK_NAMESPACE = 0x61676E74


_INSERT_EVENT = prepared(insert(events))


class SqlAlchemyEventRepository:
    """The outbox. Event ids must become visible in increasing order, as WatchEvents resumes
    "after id N": a later commit with a smaller id would never be seen. SQLite commits one
    transaction at a time, so its ids are in commit order anyway. A PostgreSQL sequence is
    not: ids are handed out at insert, and transactions commit in any order. So on
    PostgreSQL a writer takes an advisory lock before its insert, held until its commit:
    writers of events take turns from id to commit. It also sends a NOTIFY, delivered to
    the other replicas on commit, naming the sender and the tenant, session and turn the
    events belong to (see commit_payload.py and commit_notifications.py).
    """

    def __init__(
        self,
        db: Database,
        tenant_id: str,
        *,
        postgresql: bool = False,
        origin: str | None = None,
    ) -> None:
        self._db = db
        self._tenant = tenant_id
        self._postgresql = postgresql
        self._origin = origin  # names this process in its NOTIFYs (None: nobody)
        self._pending: list[dict[str, Any]] = []
        self.added = 0  # tells the unit of work whether a commit publishes events
        # What the events added so far belong to: one turn in practice (a turn commits its
        # own events), the tenant or a session when they span several.
        self.scope: CommitScope | None = None

    async def add(self, event: Event) -> None:
        # Buffered: written by flush() as one statement just before the commit, still in
        # the same transaction as the change the event describes.
        self._pending.append(
            {
                "type": event.type.value,
                "tenant_id": self._tenant,
                "session_id": event.session_id,
                "turn_id": event.turn_id,
                "data": json.dumps(event.data, default=str),
                "occurred_at": event.occurred_at,
            }
        )
        self.added += 1
        self.scope = _widened(self.scope, self._tenant, event.session_id, event.turn_id)

    async def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            if self._postgresql:
                await self._db.execute(
                    select(
                        func.pg_advisory_xact_lock(
                            OUTBOX_LOCK_NAMESPACE, func.hashtext(self._tenant)
                        ),
                        func.pg_notify(
                            COMMIT_CHANNEL,
                            commit_payload.encode(
                                self.scope or CommitScope(self._tenant), self._origin
                            ),
                        ),
                    )
                )
            await self._db.execute(_INSERT_EVENT, pending)

    def discard(self) -> None:
        self._pending.clear()
        self.added = 0
        self.scope = None

    async def after(
        self,
        event_id: int,
        *,
        session_id: str | None,
        types: frozenset[EventType],
        limit: int,
    ) -> list[StoredEvent]:
        query = select(events).where(
            events.c.tenant_id == self._tenant, events.c.event_id > event_id
        )
        if session_id:
            query = query.where(events.c.session_id == session_id)
        if types:
            query = query.where(events.c.type.in_(sorted(t.value for t in types)))
        rows = (await self._db.execute(query.order_by(events.c.event_id).limit(limit))).all()
        return [
            StoredEvent(
                row.event_id,
                Event(
                    EventType(row.type),
                    row.session_id,
                    row.occurred_at,
                    row.turn_id,
                    json.loads(row.data),
                ),
            )
            for row in rows
        ]

    async def last_id(self) -> int:
        newest = select(func.max(events.c.event_id)).where(events.c.tenant_id == self._tenant)
        return int(await self._db.scalar(newest) or 0)


def _widened(
    scope: CommitScope | None, tenant_id: str, session_id: str, turn_id: str | None
) -> CommitScope:
    """`scope` widened to cover an event of `session_id` and `turn_id` too."""
    if scope is None:
        return CommitScope(tenant_id, session_id, turn_id)
    if scope.session_id != session_id:
        return CommitScope(tenant_id)
    if scope.turn_id != turn_id:
        return CommitScope(tenant_id, session_id)
    return scope


# -- row <-> domain mapping ---------------------------------------------------------------


def _session_from_row(row: Row[Any]) -> Session:
    return Session(
        session_id=row.session_id,
        agent=row.agent,
        title=row.title,
        message_count=row.message_count,
        running_turn_id=row.running_turn_id,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        deleted_at=row.deleted_at,
    )


def _turn_values(turn: Turn) -> dict[str, Any]:
    return {
        "turn_id": turn.turn_id,
        "session_id": turn.session_id,
        "agent": turn.agent,
        "model": turn.model,
        "status": turn.status.value,
        "stop_reason": turn.stop_reason.value if turn.stop_reason else None,
        "input_message_id": turn.input_message_id,
        "client_message_id": turn.client_message_id,
        "prompt_tokens": turn.usage.prompt_tokens,
        "completion_tokens": turn.usage.completion_tokens,
        "error_reason": turn.error.reason if turn.error else None,
        "error_message": turn.error.message if turn.error else None,
        "started_at": turn.started_at,
        "finished_at": turn.finished_at,
        "input_hash": turn.input_hash,
        "owner": turn.owner,
        "lease_expires_at": turn.lease_expires_at,
    }


def _turn_from_row(row: Row[Any]) -> Turn:
    return Turn(
        turn_id=row.turn_id,
        session_id=row.session_id,
        agent=row.agent,
        model=row.model,
        started_at=row.started_at,
        input_message_id=row.input_message_id,
        client_message_id=row.client_message_id,
        status=TurnStatus(row.status),
        stop_reason=StopReason(row.stop_reason) if row.stop_reason else None,
        usage=Usage(row.prompt_tokens, row.completion_tokens),
        error=TurnError(row.error_reason, row.error_message or "") if row.error_reason else None,
        finished_at=row.finished_at,
        input_hash=row.input_hash,
        owner=row.owner,
        lease_expires_at=row.lease_expires_at,
    )


def _tool_calls_json(calls: tuple[ToolCallRecord, ...]) -> str | None:
    if not calls:
        return None
    return json.dumps(
        [{"call_id": c.call_id, "tool_name": c.tool_name, "arguments": c.arguments} for c in calls]
    )


def _message_from_row(row: Row[Any]) -> Message:
    # Most messages have no tool calls: no JSON to parse (this runs for every history row).
    calls = (
        tuple(
            ToolCallRecord(c["call_id"], c["tool_name"], c["arguments"])
            for c in json.loads(row.tool_calls)
        )
        if row.tool_calls
        else ()
    )
    return Message(
        message_id=row.message_id,
        session_id=row.session_id,
        position=row.position,
        role=Role(row.role),
        content=row.content,
        created_at=row.created_at,
        turn_id=row.turn_id,
        tool_calls=calls,
        tool_call_id=row.tool_call_id,
        incomplete=bool(row.incomplete),
        is_error=bool(row.is_error),
    )


def _approval_values(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": approval.approval_id,
        "session_id": approval.session_id,
        "call_id": approval.call_id,
        "message_id": approval.message_id,
        "turn_id": approval.turn_id,
        "tool_name": approval.tool_name,
        "arguments": json.dumps(approval.arguments),
        "final_arguments": (
            None if approval.final_arguments is None else json.dumps(approval.final_arguments)
        ),
        "reason": approval.reason,
        "status": approval.status.value,
        "feedback": approval.feedback,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
    }


def _approval_from_row(row: Row[Any]) -> Approval:
    return Approval(
        approval_id=row.approval_id,
        session_id=row.session_id,
        call_id=row.call_id,
        message_id=row.message_id,
        turn_id=row.turn_id,
        tool_name=row.tool_name,
        arguments=json.loads(row.arguments),
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
        status=ApprovalStatus(row.status),
        final_arguments=None if row.final_arguments is None else json.loads(row.final_arguments),
        feedback=row.feedback,
        decided_at=row.decided_at,
    )


def abandoned_turn_candidates(now: datetime, owner: str) -> tuple[ColumnElement[bool], ...]:
    """Running turns whose lease expired at `now`, or that `owner` runs (or ran before a
    restart): what recovery looks at. Narrow it by tenant, or read it across tenants."""
    return (
        turns.c.status == TurnStatus.RUNNING.value,
        or_(turns.c.lease_expires_at < now, turns.c.owner == owner),
    )


def count_pending_approvals(now: datetime) -> Select[int]:
    """Approvals still waiting for a decision at `now`; narrow it with .where()."""
    return (
        select(func.count())
        .select_from(approvals)
        .where(
            approvals.c.status == ApprovalStatus.PENDING.value,
            approvals.c.expires_at > now,
        )
    )
