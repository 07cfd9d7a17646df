"""A commit with events wakes this process's waiters of its scope as soon as it lands, even
when its caller was cancelled while the COMMIT ran; a commit that does not land wakes
nobody. On a real SQLite file and a real PostgreSQL, with the COMMIT held where the test
sees it (SQLite: on the writer's thread, as the COMMIT statement starts; PostgreSQL: in the
server, on a lock a deferred trigger takes) until the test lets it go."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.application.ports import CommitScope
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import Message, Role, Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.waiting import FOREVER, eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class HeldCommit(Protocol):
    async def reached(self) -> None:
        """Returns once a COMMIT is held: started, not yet landed."""

    async def release(self) -> None:
        """Lets the held COMMIT go on."""

    async def spoil(self, uow: UnitOfWork) -> None:
        """Makes the open transaction's COMMIT fail, once released."""


class _HeldSqliteCommit:
    """The writer's first COMMIT waits on its thread, as the statement starts, for release."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        self._reached = asyncio.Event()
        self._release = threading.Event()
        self._holding = threading.Lock()  # taken by the first COMMIT only
        loop = asyncio.get_running_loop()

        def on_statement(sql: str) -> None:  # runs on whichever thread runs the statement
            if sql == "COMMIT" and self._holding.acquire(blocking=False):
                loop.call_soon_threadsafe(self._reached.set)
                self._release.wait()

        raw.set_trace_callback(on_statement)

    async def reached(self) -> None:
        await self._reached.wait()

    async def release(self) -> None:
        self._release.set()

    async def spoil(self, uow: UnitOfWork) -> None:
        # A message of a session that does not exist, its foreign key checked at COMMIT.
        self._raw.execute("PRAGMA defer_foreign_keys=ON")  # for this transaction only
        await uow.messages.add(Message("orphan", "nowhere", 1, Role.USER, "x", NOW))

    def close(self) -> None:
        self._release.set()
        self._raw.set_trace_callback(None)


# The advisory lock a deferred trigger on events takes at COMMIT (one bigint key: a lock
# space of its own, apart from the outbox's two-key locks).
_HOLD_KEY = 4242
_HOLD_COMMITS = f"""
CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({_HOLD_KEY});
    IF NEW.session_id = 'spoilt' THEN
        RAISE EXCEPTION 'this commit was spoilt by the test';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit();
"""


class _HeldPostgresCommit:
    """COMMITs with events wait in the server for a lock the test holds until release."""

    def __init__(self, connection: asyncpg.Connection[Any]) -> None:
        self._connection = connection

    async def reached(self) -> None:
        async def waiting() -> bool:
            return bool(
                await self._connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                    " AND objid = $1 AND NOT granted)",
                    _HOLD_KEY,
                )
            )

        # Polling: the lock table is the only place where the server shows the wait.
        await eventually(waiting, what="a COMMIT to wait for the lock")

    async def release(self) -> None:
        await self._connection.execute("SELECT pg_advisory_unlock($1)", _HOLD_KEY)

    async def spoil(self, uow: UnitOfWork) -> None:
        await uow.events.add(Event(EventType.TURN_FAILED, "spoilt", NOW, "t1"))


@asynccontextmanager
async def held_commit(
    engine: AsyncEngine, uows: SqlAlchemyUnitOfWorkFactory
) -> AsyncIterator[HeldCommit]:
    if engine.dialect.name == "sqlite":
        assert uows._writer is not None
        raw: Any = uows._writer.connection().connection.dbapi_connection
        hold = _HeldSqliteCommit(raw)
        try:
            yield hold
        finally:
            hold.close()
        return
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(_HOLD_COMMITS)
        await connection.execute("SELECT pg_advisory_lock($1)", _HOLD_KEY)
        yield _HeldPostgresCommit(connection)
    finally:
        await connection.close()  # also gives up the lock, if a test failed holding it


@pytest.fixture
async def uows(engine: AsyncEngine) -> AsyncIterator[SqlAlchemyUnitOfWorkFactory]:
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    yield factory
    await factory.close()


async def _commit_a_turn_failure(
    uows: SqlAlchemyUnitOfWorkFactory, hold: HeldCommit, *, spoilt: bool, committing: asyncio.Event
) -> None:
    """What recovery commits for an abandoned turn: an event outside any turn's own commit."""
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.events.add(Event(EventType.TURN_FAILED, "s1", NOW, "t1"))
        if spoilt:
            await hold.spoil(uow)
        committing.set()
        await uow.commit()


@pytest.mark.parametrize("spoilt", [False, True], ids=["landing", "failing"])
async def test_a_commit_wakes_its_waiters_if_and_only_if_it_lands_though_its_caller_was_cancelled(
    engine: AsyncEngine, uows: SqlAlchemyUnitOfWorkFactory, spoilt: bool
) -> None:
    signal = uows.signal
    before = signal.generation()
    watcher = asyncio.create_task(signal.wait(before, FOREVER, CommitScope(TENANT, "s1")))
    committing = asyncio.Event()
    async with held_commit(engine, uows) as hold:
        caller = asyncio.create_task(
            _commit_a_turn_failure(uows, hold, spoilt=spoilt, committing=committing)
        )
        await hold.reached()
        assert committing.is_set() and not caller.done()  # it waits for its COMMIT
        caller.cancel()
        await hold.release()
        # The caller ends once its unit of work is closed, after the COMMIT's end.
        await asyncio.gather(caller, return_exceptions=True)
    assert caller.cancelled()
    async with uows.reader(TENANT) as reader:
        landed = await reader.sessions.get("s1") is not None
    assert landed is not spoilt
    if spoilt:
        assert signal.generation() == before  # nobody woken for a commit that did not land
        assert not watcher.done()
        watcher.cancel()
        return
    assert signal.generation() > before, "the commit landed but woke nobody"
    await watcher  # woken, though it would otherwise poll only after FOREVER
