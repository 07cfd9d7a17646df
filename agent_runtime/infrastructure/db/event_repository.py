"""SqlAlchemyEventRepository: the outbox of events, committed with what they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    func,
    insert,
    select,
)

from agent_runtime.application.ports import CommitScope
from agent_runtime.domain.events import Event, EventType, StoredEvent
from agent_runtime.infrastructure import json_codec
from agent_runtime.infrastructure.db import commit_payload
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import (
    events,
)

# The LISTEN/NOTIFY channel of commits with events (commit_notifications.py listens).
COMMIT_CHANNEL = "agent_runtime_commits"
# Our namespace ("agnt") for PostgreSQL's transaction-level advisory locks around outbox
# writes, one lock per tenant: WatchEvents reads one tenant's events, so ids need to become
# visible in order only within a tenant, and tenants need not wait for each other's commits.
OUTBOX_LOCK_NAMESPACE = 0x61676E74


_INSERT_EVENT = hot(insert(events))


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
            row(
                events,
                type=event.type.value,
                tenant_id=self._tenant,
                session_id=event.session_id,
                turn_id=event.turn_id,
                data=json_codec.dumps(event.data, default=str),
                occurred_at=event.occurred_at,
            )
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
                found.event_id,
                Event(
                    EventType(found.type),
                    found.session_id,
                    found.occurred_at,
                    found.turn_id,
                    json_codec.loads(found.data),
                ),
            )
            for found in rows
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
