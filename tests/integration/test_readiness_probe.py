"""DatabaseReadinessProbe on a real SQLite file (and a real PostgreSQL for locks), bounded as
the server bounds it: ready while the event loop is overloaded, since on SQLite it reads
inline on a connection of its own; failed while a lock keeps readers out; on SQLite,
another connection's write transaction does not matter. (A stale or missing schema:
tests/e2e/test_health.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.application.periodic import Bounded
from agent_runtime.application.readiness import Readiness
from agent_runtime.infrastructure.db.readiness import DatabaseReadinessProbe
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import alembic_version_locked

# Far shorter than anything a real check would be given: an overloaded loop outlasts it.
TINY_TIMEOUT = 0.02
# Not a timing assertion: only how long to let an abandoned check end before closing.
GRACE_SECONDS = 60


async def hog_the_loop(step_seconds: float) -> None:
    """Keeps the event loop busy, as 1,000 slow streams do: each step of this task runs
    synchronously until the loop's clock has moved on by `step_seconds`, then lets the
    other tasks take one step each. Every turn of the loop thus outlasts the probe's
    timeout: a probe that needs more than one step is timed out."""
    loop = asyncio.get_running_loop()
    while True:
        step_ends = loop.time() + step_seconds
        while loop.time() <= step_ends:
            pass
        await asyncio.sleep(0)


@pytest.fixture
async def hogged_loop() -> AsyncIterator[None]:
    hog = asyncio.create_task(hog_the_loop(TINY_TIMEOUT))
    yield
    hog.cancel()


async def test_a_healthy_sqlite_database_is_ready_while_the_event_loop_is_overloaded(
    sqlite_engine: AsyncEngine, hogged_loop: None
) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(sqlite_engine)
    try:
        bounded = Bounded(DatabaseReadinessProbe(uows).check, TINY_TIMEOUT)
        for _ in range(3):  # the first opens a reader's connection, the others reuse it
            assert await bounded() == Readiness(True)
    finally:
        await uows.close()


@asynccontextmanager
async def readers_kept_waiting(engine: AsyncEngine) -> AsyncIterator[None]:
    """Another connection holding a lock that keeps readers waiting while it is held."""
    if engine.dialect.name == "postgresql":
        async with alembic_version_locked(engine):
            yield
        return
    # SQLite: exclusive locking mode keeps every other connection from reading (readers get
    # SQLITE_BUSY, then wait on a thread up to the busy timeout). It can be taken only while
    # no other connection has the file open.
    await engine.dispose()
    database = engine.url.database
    assert database is not None
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    try:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.execute("PRAGMA locking_mode=NORMAL")
            other.execute("SELECT count(*) FROM alembic_version").fetchall()  # lock given up
    finally:
        other.close()


async def test_a_lock_that_keeps_readers_out_makes_the_check_fail(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)  # on SQLite opens its connections when used
    probe = DatabaseReadinessProbe(uows)
    bounded = Bounded(probe.check, TINY_TIMEOUT)
    try:
        async with readers_kept_waiting(engine):
            if engine.dialect.name == "sqlite":
                # Read inline with no busy timeout: it fails at once, naming the lock.
                ready = await bounded()
                assert not ready.ready and "locked" in ready.problem
            else:  # PostgreSQL waits for the lock: the timeout ends the check
                with pytest.raises(TimeoutError):
                    await bounded()
        await bounded.finish(GRACE_SECONDS)  # the abandoned check ends once the lock is gone
        assert await probe.check() == Readiness(True)
    finally:
        probe.close()
        await uows.close()


async def test_another_connections_write_transaction_does_not_make_sqlite_unready(
    sqlite_engine: AsyncEngine,
) -> None:
    # A WAL reader does not wait for the writer: a long commit (under load, this process's
    # own) is no sign of a database that cannot serve.
    uows = SqlAlchemyUnitOfWorkFactory(sqlite_engine)
    bounded = Bounded(DatabaseReadinessProbe(uows).check, TINY_TIMEOUT)
    try:
        async with sqlite_engine.connect() as connection:
            transaction = await connection.begin()  # BEGIN IMMEDIATE: the write lock
            await connection.execute(text("UPDATE alembic_version SET version_num = 'x'"))
            try:
                assert await bounded() == Readiness(True)  # sees the committed revision
            finally:
                await transaction.rollback()
    finally:
        await bounded.finish(GRACE_SECONDS)
        await uows.close()
