"""Repositories and the unit of work on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.domain.model import (
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    TurnStatus,
    Usage,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.engine import create_sqlite_writer_engine
from agent_runtime.infrastructure.db.migrate import schema_is_current, upgrade_to_head
from agent_runtime.infrastructure.db.tables import metadata
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def _seed(uows: SqlAlchemyUnitOfWorkFactory, session_id: str = "s1") -> None:
    async with uows(DEFAULT_TENANT) as uow:
        await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
        await uow.commit()


async def test_migrations_match_the_tables_the_code_uses(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    assert await schema_is_current(engine)
    await upgrade_to_head(engine)  # idempotent


async def test_sqlite_runs_in_wal_mode(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.connect() as connection:
        mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


async def test_sqlite_writes_keep_their_journals_in_memory(tmp_path: Path) -> None:
    # Group commit runs each unit of work in a SAVEPOINT: its journal must not be a file.
    writer = create_sqlite_writer_engine(make_url(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    try:
        with writer.connect() as connection:
            temp_store = connection.exec_driver_sql("PRAGMA temp_store").scalar()
    finally:
        writer.dispose()
    assert temp_store == 2  # MEMORY


async def test_messages_round_trip_with_tool_calls_and_aware_times(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    await _seed(uows)
    call = ToolCallRecord("call_1", "read_file", {"path": "a.py", "start_line": 3})
    async with uows(DEFAULT_TENANT) as uow:
        await uow.messages.add(Message("m1", "s1", 1, Role.USER, "hi", NOW))
        await uow.messages.add(
            Message("m2", "s1", 2, Role.ASSISTANT, "", NOW, turn_id="t", tool_calls=(call,))
        )
        await uow.messages.add(
            Message("m3", "s1", 3, Role.TOOL, "data", NOW, tool_call_id="call_1")
        )
        await uow.commit()
    async with uows(DEFAULT_TENANT) as uow:
        recent = await uow.messages.recent("s1", 2)
        page = await uow.messages.page("s1", 1, 10)
    assert [m.message_id for m in recent] == ["m2", "m3"]
    assert [m.message_id for m in page] == ["m2", "m3"]
    assert recent[0].tool_calls == (call,)
    assert recent[1].tool_call_id == "call_1"
    assert recent[0].created_at == NOW and recent[0].created_at.tzinfo is not None


async def test_leaving_without_commit_rolls_back(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    await _seed(uows)
    async with uows(DEFAULT_TENANT) as uow:
        await uow.messages.add(Message("m1", "s1", 1, Role.USER, "lost", NOW))
    async with uows(DEFAULT_TENANT) as uow:
        assert await uow.messages.recent("s1", 10) == []


async def test_exactly_one_of_many_concurrent_claims_wins(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    await _seed(uows)

    async def claim(turn_id: str) -> str | None:
        async with uows(DEFAULT_TENANT) as uow:
            running = await uow.sessions.claim_turn("s1", turn_id)
            await uow.commit()
            return running

    results = await asyncio.gather(*(claim(f"t{i}") for i in range(8)))
    winners = [f"t{i}" for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(r == winners[0] for r in results if r is not None)

    async with uows(DEFAULT_TENANT) as uow:
        await uow.sessions.release_turn("s1", "not-the-runner", NOW)
        await uow.commit()
    async with uows(DEFAULT_TENANT) as uow:
        session = await uow.sessions.get("s1")
        assert session is not None and session.running_turn_id == winners[0]
        await uow.sessions.release_turn("s1", winners[0], NOW, message_count=4)
        await uow.commit()
    async with uows(DEFAULT_TENANT) as uow:
        session = await uow.sessions.get("s1")
        assert session is not None
        assert (session.running_turn_id, session.message_count) == (None, 4)


async def test_turn_save_and_interrupt_abandoned(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    await _seed(uows)
    done = Turn("t1", "s1", "coder", "m", NOW)
    done.complete(StopReason.TOOL_CALL, Usage(2, 3), NOW)
    async with uows(DEFAULT_TENANT) as uow:
        assert await uow.sessions.claim_turn("s1", "t2") is None
        await uow.turns.add(done)
        await uow.turns.add(Turn("t2", "s1", "coder", "m", NOW))
        await uow.commit()
    async with uows(DEFAULT_TENANT) as uow:
        interrupted = await uow.turns.abandoned_candidates(NOW, owner="")
        await uow.turns.interrupt(interrupted, NOW)
        await uow.commit()
    assert [t.turn_id for t in interrupted] == ["t2"]
    async with uows(DEFAULT_TENANT) as uow:
        stored = await uow.turns.get("t1")
        t2 = await uow.turns.get("t2")
        session = await uow.sessions.get("s1")
    assert stored == done
    assert t2 is not None and t2.status is TurnStatus.INTERRUPTED
    assert session is not None and session.running_turn_id is None


async def test_unit_of_work_releases_the_write_lock_when_cancelled(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    await _seed(uows)
    holding = asyncio.Event()

    async def hold_lock() -> None:
        async with uows(DEFAULT_TENANT) as uow:
            await uow.messages.add(Message("m1", "s1", 1, Role.USER, "x", NOW))
            holding.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(hold_lock())
    await holding.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Another writer gets the lock at once, and the cancelled write left nothing behind.
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE sessions SET title = 'next'"))
        count = (await connection.execute(text("SELECT count(*) FROM messages"))).scalar()
    assert count == 0
