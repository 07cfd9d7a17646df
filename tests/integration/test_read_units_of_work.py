"""Read-only units of work (uow_factory.reader) on a real SQLite file and a real PostgreSQL:
they do not wait for a writer mid-transaction, see only committed rows, one snapshot per
unit of work, cannot write, and their failures are StorageUnavailable. On SQLite a reader's
snapshot ends with its unit of work, and a lock held by another connection is waited for off
the event loop, on aiosqlite's threads."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.domain.agents import default_agents
from agent_runtime.domain.chunks import Chunk, TurnCompleted
from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.domain.model import Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from agent_runtime.object_graph import build_turns
from tests.fakes import ScriptedModel, text_answer
from tests.support.databases import query
from tests.support.waiting import eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
# Not a timing assertion: a reader that waited for the writer would otherwise hang the test.
DEADLOCK_GUARD_SECONDS = 10


async def _add_session(uows: SqlAlchemyUnitOfWorkFactory, session_id: str) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
        await uow.commit()


async def _session_ids(uows: SqlAlchemyUnitOfWorkFactory, tenant_id: str = TENANT) -> list[str]:
    async with uows.reader(tenant_id) as uow:
        return [s.session_id for s in await uow.sessions.page_by_activity(None, 10)]


async def test_a_reader_does_not_wait_for_a_writer_mid_transaction_and_sees_only_commits(
    engine: AsyncEngine,
) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        await _add_session(uows, "s1")
        async with uows(TENANT) as writing:
            await writing.sessions.add(Session("s2", "coder", NOW, NOW))
            if engine.dialect.name == "sqlite":
                assert uows._writer is not None and uows._writer.gate.locked()
            # Another task reads while this unit of work holds the writer, uncommitted.
            reading = asyncio.create_task(_session_ids(uows))
            seen = await asyncio.wait_for(reading, DEADLOCK_GUARD_SECONDS)
            assert seen == ["s1"]
            await writing.commit()
        assert sorted(await _session_ids(uows)) == ["s1", "s2"]
    finally:
        await uows.close()


async def test_a_reader_is_scoped_to_its_tenant(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        await _add_session(uows, "s1")
        assert await _session_ids(uows, "another-tenant") == []
        assert await _session_ids(uows) == ["s1"]
    finally:
        await uows.close()


async def test_a_reader_sees_one_snapshot_for_its_whole_unit_of_work(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        await _add_session(uows, "s1")
        async with uows.reader(TENANT) as uow:
            assert await uow.sessions.get("s1") is not None
            await _add_session(uows, "s2")  # committed after the reader's first read
            assert await uow.sessions.get("s2") is None
        async with uows.reader(TENANT) as uow:
            assert await uow.sessions.get("s2") is not None
    finally:
        await uows.close()


async def test_a_reader_cannot_write(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        async with uows.reader(TENANT) as uow:
            assert not hasattr(uow, "commit")
            with pytest.raises(StorageUnavailable) as caught:
                await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        assert "read" in caught.value.message
        url = engine.url.render_as_string(hide_password=False)
        assert await query(url, "SELECT session_id FROM sessions") == []
        # The connection that refused to write reads on, for the next unit of work.
        await _add_session(uows, "s1")
        assert await _session_ids(uows) == ["s1"]
    finally:
        await uows.close()


async def test_a_file_that_is_not_a_database_is_storage_unavailable_to_a_reader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "not-a.db"
    path.write_bytes(b"this is not an SQLite database, " * 256)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await _session_ids(uows)
        assert "not a database" in caught.value.message
        with pytest.raises(StorageUnavailable):
            await uows.count_pending_approvals(NOW)
    finally:
        await uows.close()
        await engine.dispose()


async def test_a_refused_postgresql_connection_is_storage_unavailable_to_a_reader() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/test")  # nothing listens there
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await _session_ids(uows)
        assert "ConnectionRefusedError" in caught.value.message
    finally:
        await engine.dispose()


async def test_a_readers_snapshot_ends_with_its_unit_of_work(sqlite_engine: AsyncEngine) -> None:
    database = sqlite_engine.url.database
    assert database is not None
    uows = SqlAlchemyUnitOfWorkFactory(sqlite_engine)
    loop = asyncio.get_running_loop()
    checkpoint: asyncio.Future[int] = loop.create_future()

    def truncate_the_wal() -> None:
        """What another connection can do once no reader uses the WAL: start it over."""
        with contextlib.closing(sqlite3.connect(database, timeout=0)) as other:
            busy, _frames, _copied = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        checkpoint.set_result(busy)

    try:
        await _add_session(uows, "s1")  # in the WAL: the reader's snapshot includes it
        async with uows.reader(TENANT) as uow:
            assert await uow.sessions.get("s1") is not None
        # Once the block is left, the snapshot is gone: otherwise many readers could
        # overlap without end, and the WAL never start over.
        loop.call_soon(truncate_the_wal)
        assert await checkpoint == 0  # not busy: no reader held the WAL
    finally:
        await uows.close()


async def test_a_lock_held_by_another_connection_is_waited_for_off_the_event_loop(
    sqlite_engine: AsyncEngine,
) -> None:
    seeding = SqlAlchemyUnitOfWorkFactory(sqlite_engine)
    await _add_session(seeding, "s1")
    await seeding.close()
    await sqlite_engine.dispose()  # no connection of ours keeps the file open
    database = sqlite_engine.url.database
    assert database is not None
    # A connection in exclusive locking mode keeps every other connection from reading:
    # the rare moment (as WAL recovery is) when a reader gets SQLITE_BUSY.
    other = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    uows = SqlAlchemyUnitOfWorkFactory(sqlite_engine)
    try:
        reading = asyncio.create_task(_session_ids(uows))
        ticks = 0

        async def loop_runs() -> bool:
            nonlocal ticks
            ticks += 1
            return ticks > 20

        await eventually(loop_runs, what="the event loop to keep running")
        assert not reading.done()
        other.execute("ROLLBACK")
        other.execute("PRAGMA locking_mode=NORMAL")
        other.execute("SELECT count(*) FROM sessions").fetchall()  # gives the lock up
        other.close()
        assert await reading == ["s1"]
    finally:
        other.close()
        await uows.close()


async def _all(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


async def test_a_read_in_progress_does_not_hold_up_a_turns_commits(engine: AsyncEngine) -> None:
    """A long read (a ListMessages paging through a big session, say) is under way, its
    snapshot held, while a whole turn runs beside it: the turn's commits land before the read
    ends, because readers never take the writer's place (ordering, not timing)."""
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    turns = build_turns(
        uows,
        ScriptedModel(text_answer("done")),
        default_agents(),
        TurnSettings(),
        default_model="m",
    )
    try:
        await _add_session(uows, "s1")
        async with uows.reader(TENANT) as reading:
            assert [m.message_id for m in await reading.messages.page("s1", 0, 10)] == []
            stream = turns.handler.handle(SendUserMessage("s1", "hello", tenant_id=TENANT))
            turn = await asyncio.wait_for(_all(stream), DEADLOCK_GUARD_SECONDS)
            assert isinstance(turn[-1].body, TurnCompleted)
            # Committed while the reader still holds its snapshot: a new reader sees it...
            async with uows.reader(TENANT) as fresh:
                assert (await fresh.sessions.get("s1")).message_count == 2  # type: ignore[union-attr]
            # ...and the one in progress still reads its own snapshot.
            assert await reading.messages.page("s1", 0, 10) == []
    finally:
        await uows.close()
