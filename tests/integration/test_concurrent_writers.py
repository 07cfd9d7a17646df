"""Writers that really run side by side (PostgreSQL's READ COMMITTED; SQLite queues them):
duplicate keys, reclaiming the same turn twice, and event ids in commit order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.api.mapping import shown_session_bytes
from agent_runtime.application.commands import CreateSession
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.session_bound import SessionBound
from agent_runtime.application.session_handler import SessionHandler
from agent_runtime.application.turn_recovery import TurnRecovery
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.errors import AlreadyExists
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import Session, Turn
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.event_repository import SqlAlchemyEventRepository
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import database_for
from tests.support.waiting import eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_concurrent_creates_of_one_session_id_make_one_and_refuse_the_rest(
    engine: AsyncEngine,
) -> None:
    handler = SessionHandler(
        SqlAlchemyUnitOfWorkFactory(engine),
        default_agents(),
        bound=SessionBound(shown_session_bytes),
    )

    async def create() -> str:
        try:
            await handler.create(CreateSession(session_id="s1", tenant_id=DEFAULT_TENANT))
        except AlreadyExists as error:
            return error.reason
        return "created"

    outcomes = await asyncio.gather(*(create() for _ in range(12)))
    assert sorted(outcomes) == ["SESSION_EXISTS"] * 11 + ["created"]


async def test_two_processes_reclaiming_one_abandoned_turn_record_it_once(
    engine: AsyncEngine,
) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    async with uows(DEFAULT_TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW, running_turn_id="t1"))
        await uow.turns.add(Turn("t1", "s1", "coder", "m", NOW, owner="dead", lease_expires_at=NOW))
        await uow.commit()
    # Two replicas (each with its own live-turn registry and unit-of-work factory).
    replicas = [
        TurnRecovery(
            SqlAlchemyUnitOfWorkFactory(engine),
            LiveTurnRegistry(),
            owner=f"replica-{i}",
            lease=timedelta(seconds=30),
            clock=lambda: NOW + timedelta(seconds=1),
        )
        for i in range(2)
    ]
    reclaimed = await asyncio.gather(*(replica.recover() for replica in replicas))

    assert sorted(len(turns) for turns in reclaimed) == [0, 1]
    async with uows(DEFAULT_TENANT) as uow:
        failed = await uow.events.after(
            0, session_id="s1", types=frozenset({EventType.TURN_FAILED}), limit=10
        )
        session = await uow.sessions.get("s1")
        turn = await uow.turns.get("t1")
    assert len(failed) == 1
    assert session is not None and session.running_turn_id is None
    assert turn is not None and turn.status.value == "interrupted"


async def _waiting_for_an_advisory_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return bool(waiting)


async def test_postgresql_event_ids_become_visible_in_increasing_order(tmp_path: Path) -> None:
    """A reader that saw id N must never later find a new event with an id below N."""
    async with database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            uows = SqlAlchemyUnitOfWorkFactory(engine)

            def event(name: str) -> Event:
                return Event(EventType.TURN_STARTED, "s1", NOW, name)

            async def write(name: str) -> None:
                async with uows(DEFAULT_TENANT) as uow:
                    await uow.events.add(event(name))
                    await uow.commit()

            async def visible_after(cursor: int) -> list[tuple[int, str | None]]:
                async with uows(DEFAULT_TENANT) as uow:
                    found = await uow.events.after(
                        cursor, session_id=None, types=frozenset(), limit=100
                    )
                return [(e.event_id, e.event.turn_id) for e in found]

            async with uows(DEFAULT_TENANT) as first:
                await first.events.add(event("first"))
                outbox = first.events
                assert isinstance(outbox, SqlAlchemyEventRepository)
                await outbox.flush()  # the first writer has its id, not yet committed
                second = asyncio.create_task(write("second"))

                async def second_committed_or_waiting() -> bool:
                    return second.done() or await _waiting_for_an_advisory_lock(engine)

                await eventually(second_committed_or_waiting, what="the second writer")
                # A watcher polls now and moves its cursor past what it saw.
                seen = await visible_after(0)
                cursor = max((event_id for event_id, _ in seen), default=0)
                await first.commit()
            await asyncio.wait_for(second, 10)

            later = await visible_after(cursor)
            assert sorted(str(name) for _, name in seen + later) == ["first", "second"], (
                f"an event committed after the cursor ({cursor}) had a smaller id: "
                f"seen {seen}, then {later}"
            )
        finally:
            await engine.dispose()


async def test_postgresql_outbox_writers_of_different_tenants_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    async with database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            uows = SqlAlchemyUnitOfWorkFactory(engine)
            async with uows("tenant-a") as first:
                await first.events.add(Event(EventType.TURN_STARTED, "s1", NOW, "a"))
                outbox = first.events
                assert isinstance(outbox, SqlAlchemyEventRepository)
                await outbox.flush()  # tenant-a's outbox lock is held until its commit

                async with uows("tenant-b") as other:
                    await other.events.add(Event(EventType.TURN_STARTED, "s1", NOW, "b"))
                    await asyncio.wait_for(other.commit(), 10)
                await first.commit()
        finally:
            await engine.dispose()
