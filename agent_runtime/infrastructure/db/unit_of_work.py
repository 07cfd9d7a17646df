"""SqlAlchemyUnitOfWork: one database session per unit of work, closed on every exit path;
SqlAlchemyReadUnitOfWork: the same repositories on a session that only reads."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from agent_runtime.application.ports import CommitScope
from agent_runtime.application.repositories import (
    ApprovalRepository,
    EventRepository,
    MessageRepository,
    SessionRepository,
    TurnRepository,
    UsageRepository,
)
from agent_runtime.application.run_to_completion import run_to_completion
from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.infrastructure.db.approval_repository import (
    SqlAlchemyApprovalRepository,
)
from agent_runtime.infrastructure.db.event_repository import SqlAlchemyEventRepository
from agent_runtime.infrastructure.db.group_commit import BatchLost
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.message_repository import SqlAlchemyMessageRepository
from agent_runtime.infrastructure.db.session_repository import SqlAlchemySessionRepository
from agent_runtime.infrastructure.db.turn_repository import (
    SqlAlchemyTurnRepository,
)
from agent_runtime.infrastructure.db.usage_repository import SqlAlchemyUsageRepository
from agent_runtime.infrastructure.event_signal import LocalEventSignal


class _TenantRepositories:
    """The repositories a unit of work offers, all scoped to its tenant: each statement
    carries its tenant_id."""

    tenant_id: str
    _postgresql: bool
    sessions: SessionRepository
    turns: TurnRepository
    messages: MessageRepository
    approvals: ApprovalRepository
    events: EventRepository
    usage: UsageRepository

    def _scope_repositories(self, db: Database) -> None:
        self.sessions = SqlAlchemySessionRepository(db, self.tenant_id)
        self.turns = SqlAlchemyTurnRepository(db, self.tenant_id)
        self.messages = SqlAlchemyMessageRepository(db, self.tenant_id)
        self.approvals = SqlAlchemyApprovalRepository(db, self.tenant_id)
        self.usage = SqlAlchemyUsageRepository(db, self.tenant_id, postgresql=self._postgresql)


class SqlAlchemyUnitOfWork(_TenantRepositories):
    def __init__(
        self,
        open_database: Callable[[], Database],
        signal: LocalEventSignal,
        tenant_id: str,
        *,
        postgresql: bool = False,
        origin: str | None = None,
        commit_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self._open_database = open_database
        self.tenant_id = tenant_id
        self._signal = signal
        self._postgresql = postgresql
        self._origin = origin
        self._commit_seconds = commit_seconds
        self._db: Database | None = None

    async def __aenter__(self) -> SqlAlchemyUnitOfWork:
        self._db = self._open_database()
        self._scope_repositories(self._db)
        self._outbox = SqlAlchemyEventRepository(
            self._db, self.tenant_id, postgresql=self._postgresql, origin=self._origin
        )
        self.events = self._outbox
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        # When the RPC is cancelled, the rollback and the connection's return to the pool
        # must still happen, or the connection leaks holding SQLite's write lock.
        await run_to_completion(rollback_and_close(db))

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        await self._outbox.flush()
        wake_waiters = None
        if self._outbox.added:
            # Only the waiters of what the events belong to, and only once the COMMIT has
            # landed (watchers must see committed rows), never for a COMMIT that failed.
            # (On PostgreSQL the NOTIFY wakes the other replicas; this one ignores its own.)
            scope = self._outbox.scope or CommitScope(self.tenant_id)
            wake_waiters = functools.partial(self._signal.notify, scope)

        def landed() -> None:
            if wake_waiters is not None:
                wake_waiters()
            if on_committed is not None:
                on_committed()

        started = time.monotonic()
        # Run to its end even if our caller is cancelled meanwhile: `landed` tells whether
        # it did (called by the database once the COMMIT is on disk).
        await run_to_completion(self._session.commit(landed))
        if self._commit_seconds is not None:
            self._commit_seconds(time.monotonic() - started)
        self._outbox.added = 0
        self._outbox.scope = None

    async def rollback(self) -> None:
        self._outbox.discard()
        await self._session.rollback()

    @property
    def _session(self) -> Database:
        if self._db is None:
            raise RuntimeError("unit of work used outside its 'async with' block")
        return self._db


class SqlAlchemyReadUnitOfWork(_TenantRepositories):
    """A unit of work that only reads: no commit, and on SQLite a read-only aiosqlite
    connection instead of the writer; on PostgreSQL a READ ONLY transaction."""

    def __init__(
        self, open_database: Callable[[], Database], tenant_id: str, *, postgresql: bool = False
    ) -> None:
        self._open_database = open_database
        self.tenant_id = tenant_id
        self._postgresql = postgresql
        self._db: Database | None = None

    async def __aenter__(self) -> SqlAlchemyReadUnitOfWork:
        self._db = self._open_database()
        self._scope_repositories(self._db)  # exactly as a writing unit of work's
        self.events = SqlAlchemyEventRepository(
            self._db, self.tenant_id, postgresql=self._postgresql
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        db, self._db = self._db, None
        if db is not None:
            await run_to_completion(rollback_and_close(db))


async def rollback_and_close(db: Database) -> None:
    try:
        await db.rollback()
    except BatchLost:
        raise  # what the unit of work read never reached the disk: its answer is void
    except StorageUnavailable:
        pass  # closing returns the connection (or discards a broken one) all the same
    finally:
        await db.close()
