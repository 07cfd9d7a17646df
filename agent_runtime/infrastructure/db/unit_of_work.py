"""SqlAlchemyUnitOfWork: one database session per unit of work, closed on every exit path;
SqlAlchemyReadUnitOfWork: the same repositories on a session that only reads."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from agent_runtime.application.ports import (
    ApprovalRepository,
    CommitScope,
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
    count_pending_approvals,
)
from agent_runtime.infrastructure.db.commit_payload import origin_of
from agent_runtime.infrastructure.db.engine import create_sqlite_reader_engine, is_in_memory_sqlite
from agent_runtime.infrastructure.db.event_repository import SqlAlchemyEventRepository
from agent_runtime.infrastructure.db.group_commit import BatchLost
from agent_runtime.infrastructure.db.guarded_session import Database, GuardedSession
from agent_runtime.infrastructure.db.message_repository import SqlAlchemyMessageRepository
from agent_runtime.infrastructure.db.session_repository import SqlAlchemySessionRepository
from agent_runtime.infrastructure.db.sqlite_writer import WAL_LIMIT_BYTES, SqliteWriter
from agent_runtime.infrastructure.db.tables import turns
from agent_runtime.infrastructure.db.turn_repository import (
    SqlAlchemyTurnRepository,
    abandoned_turn_candidates,
    renew_leases,
)
from agent_runtime.infrastructure.db.usage_repository import SqlAlchemyUsageRepository
from agent_runtime.infrastructure.event_signal import LocalEventSignal

# Turns per lease-renewing UPDATE (two bound parameters each: far under SQLite's limit).
_RENEWALS_PER_STATEMENT = 500


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
        await run_to_completion(_rollback_and_close(db))

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
            await run_to_completion(_rollback_and_close(db))


async def _rollback_and_close(db: Database) -> None:
    try:
        await db.rollback()
    except BatchLost:
        raise  # what the unit of work read never reached the disk: its answer is void
    except StorageUnavailable:
        pass  # closing returns the connection (or discards a broken one) all the same
    finally:
        await db.close()


class SqlAlchemyUnitOfWorkFactory:
    """Makes a fresh unit of work per use; shared by every RPC of the process."""

    def __init__(
        self,
        engine: AsyncEngine,
        signal: LocalEventSignal | None = None,
        *,
        instance_id: str | None = None,
        commit_seconds: Callable[[float], None] | None = None,
        sqlite_wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        self.signal = signal or LocalEventSignal()
        # Names this process in its commits' NOTIFYs, so that its own commit listener
        # ignores them (this signal is woken after the commit already). None: unnamed.
        self._origin = None if instance_id is None else origin_of(instance_id)
        # Told how long each commit took (the commit-latency metric).
        self._commit_seconds = commit_seconds
        self._open_database: Callable[[], Database]
        self._open_reader: Callable[[], Database]
        self._writer: SqliteWriter | None = None
        self._reader_engine: AsyncEngine | None = None
        # The SQLite file, for a read that must not leave the event loop (readiness.py).
        self.sqlite_path: str | None = None
        if engine.dialect.name == "sqlite":
            if is_in_memory_sqlite(engine.url):
                raise ValueError(
                    "the runtime needs a SQLite file: its readers and writer each "
                    "open connections, and would see different in-memory databases"
                )
            self.sqlite_path = engine.url.database
            # SQLite has one writer at a time: every unit of work takes its turn on the
            # process's one connection (sqlite_writer.py), in order, rather than colliding
            # in SQLite, whose busy handler sleeps in growing steps between retries.
            self._writer = SqliteWriter(engine.url, wal_limit_bytes=sqlite_wal_limit_bytes)
            self._open_database = self._writer.session
            # Readers read beside it on aiosqlite connections of their own (WAL: they never
            # wait for the writer, nor it for them), and never take the writer's gate.
            pool_size = getattr(engine.pool, "size", lambda: 5)()  # the engine's own
            self._reader_engine = create_sqlite_reader_engine(engine.url, pool_size=pool_size)
            sqlite_readers = async_sessionmaker(self._reader_engine, expire_on_commit=False)
            self._open_reader = lambda: GuardedSession(sqlite_readers())
        else:
            session_factory = async_sessionmaker(engine, expire_on_commit=False)
            self._open_database = lambda: GuardedSession(session_factory())
            # PostgreSQL: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY, one statement
            # (asyncpg begins so): every statement sees the transaction's one snapshot, and
            # a read-only transaction never fails to serialize.
            read_only = (
                engine.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                if engine.dialect.name == "postgresql"
                else engine
            )
            reader_factory = async_sessionmaker(read_only, expire_on_commit=False)
            self._open_reader = lambda: GuardedSession(reader_factory())
        # Only PostgreSQL commits transactions side by side (see SqlAlchemyEventRepository).
        self._postgresql = engine.dialect.name == "postgresql"

    def __call__(self, tenant_id: str) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self._open_database,
            self.signal,
            tenant_id,
            postgresql=self._postgresql,
            origin=self._origin,
            commit_seconds=self._commit_seconds,
        )

    def reader(self, tenant_id: str) -> SqlAlchemyReadUnitOfWork:
        return SqlAlchemyReadUnitOfWork(self._open_reader, tenant_id, postgresql=self._postgresql)

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Database]:
        """A reader's connection for a read outside any unit of work (no tenant)."""
        db = self._open_reader()
        try:
            yield db
        finally:
            await run_to_completion(_rollback_and_close(db))

    async def abandoned_turn_candidates(self, now: datetime, owner: str) -> list[tuple[str, str]]:
        async with self._reading() as db:
            rows = await db.execute(
                select(turns.c.tenant_id, turns.c.turn_id)
                .where(*abandoned_turn_candidates(now, owner))
                .order_by(turns.c.tenant_id, turns.c.turn_id)
            )
            return [(row.tenant_id, row.turn_id) for row in rows]

    async def renew_leases(
        self, running: Sequence[tuple[str, str]], owner: str, until: datetime
    ) -> list[tuple[str, str]]:
        if not running:
            return []
        asked: list[tuple[str, str]] = []
        db = self._open_database()
        try:
            for start in range(0, len(running), _RENEWALS_PER_STATEMENT):
                batch = running[start : start + _RENEWALS_PER_STATEMENT]
                for found in await db.execute(renew_leases(batch, owner, until)):
                    if found.cancel_requested:
                        asked.append((found.tenant_id, found.turn_id))
            await run_to_completion(db.commit())
        finally:
            await run_to_completion(_rollback_and_close(db))
        return sorted(asked)

    async def read_scalars(self, statement: Executable) -> list[Any]:
        """One statement's first column, read on a reader."""
        async with self._reading() as db:
            return list((await db.scalars(statement)).all())

    async def limit_wal(self) -> None:
        """On SQLite, truncates the WAL if it has grown too large (sqlite_writer.py); to run
        periodically. Nothing to do on PostgreSQL."""
        if self._writer is not None:
            await self._writer.limit_wal()

    async def close(self) -> None:
        """Closes the SQLite writer (after a commit in progress) and readers; the engine is
        the caller's."""
        if self._reader_engine is not None:
            await self._reader_engine.dispose()
        if self._writer is not None:
            await self._writer.close()

    async def count_pending_approvals(self, now: datetime) -> int:
        async with self._reading() as db:
            count = await db.scalar(count_pending_approvals(now))
            return int(count or 0)
