"""LISTEN/NOTIFY between replicas: a commit with events in one process wakes the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.commit_notifications import CommitListener
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory
from agent_runtime.infrastructure.event_signal import LocalEventSignal
from tests.support.databases import database_for, postgres_admin_url
from tests.support.waiting import eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Replica:
    """Another process's view: its own signal, woken only through the listener."""

    url: str
    writer: SqlAlchemyUnitOfWorkFactory
    listener: CommitListener
    signal: LocalEventSignal


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    async with database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engine = create_engine(url)
        await upgrade_to_head(engine)
        signal = LocalEventSignal()
        listener = CommitListener(url, signal, retry_seconds=0.05)
        task = asyncio.create_task(listener.run())
        try:

            async def listening() -> bool:
                return listener.listening

            await eventually(listening, what="the listener to LISTEN")
            yield Replica(url, SqlAlchemyUnitOfWorkFactory(engine), listener, signal)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.dispose()


async def _commit_an_event(writer: SqlAlchemyUnitOfWorkFactory) -> None:
    async with writer(DEFAULT_TENANT) as uow:
        await uow.events.add(Event(EventType.TURN_STARTED, "s1", NOW, "t1"))
        await uow.commit()


async def _woken(replica: Replica, after: int) -> None:
    async def moved() -> bool:
        return replica.signal.generation() > after

    # Far below any polling interval: only the notification can explain it.
    await eventually(moved, within_seconds=2, what="the other replica to be woken")


async def test_a_commit_with_events_wakes_another_replica(replica: Replica) -> None:
    before = replica.signal.generation()
    await _commit_an_event(replica.writer)
    await _woken(replica, before)


async def test_the_listener_reconnects_after_losing_its_connection(replica: Replica) -> None:
    admin_url = make_url(postgres_admin_url()).set(drivername="postgresql")
    admin = await asyncpg.connect(admin_url.render_as_string(False))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1 AND query LIKE 'LISTEN%'",
            make_url(replica.url).username,
        )
    finally:
        await admin.close()

    async def reconnected() -> bool:
        return replica.listener.connections == 2 and replica.listener.listening

    await eventually(reconnected, what="the listener to reconnect")
    before = replica.signal.generation()
    await _commit_an_event(replica.writer)
    await _woken(replica, before)
