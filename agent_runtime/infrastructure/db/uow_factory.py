"""SqlAlchemyUnitOfWorkFactory: makes the units of work of every RPC of the process, on
SQLite (the one writer, the aiosqlite readers) or PostgreSQL; and the few reads and writes
across tenants that recovery and monitoring need."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from agent_runtime.application.run_to_completion import run_to_completion
from agent_runtime.infrastructure.db.approval_repository import (
    count_pending_approvals,
)
from agent_runtime.infrastructure.db.commit_payload import origin_of
from agent_runtime.infrastructure.db.engine import create_sqlite_reader_engine, is_in_memory_sqlite
from agent_runtime.infrastructure.db.guarded_session import Database, GuardedSession
from agent_runtime.infrastructure.db.sqlite_writer import WAL_LIMIT_BYTES, SqliteWriter
from agent_runtime.infrastructure.db.tables import turns
from agent_runtime.infrastructure.db.turn_repository import (
    abandoned_turn_candidates,
    renew_leases,
)
from agent_runtime.infrastructure.db.unit_of_work import (
    SqlAlchemyReadUnitOfWork,
    SqlAlchemyUnitOfWork,
    rollback_and_close,
)
from agent_runtime.infrastructure.event_signal import LocalEventSignal

# Turns per lease-renewing UPDATE (two bound parameters each: far under SQLite's limit).
_RENEWALS_PER_STATEMENT = 500


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
            await run_to_completion(rollback_and_close(db))

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
            await run_to_completion(rollback_and_close(db))
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
