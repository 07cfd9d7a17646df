"""The SQLite writer (one connection per process, statements inline, BEGIN IMMEDIATE and
COMMIT on its own thread), on a real SQLite file: units of work take turns, a cancelled or
crashed one leaves nothing half-written and frees the lock, a lock held by another process
does not stall the event loop, and failures are StorageUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.domain.model import Message, Role, Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.sqlite_writer import SqliteWriter
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.integration.conftest import rows_in as _rows
from tests.support.tiny_disk import fill
from tests.support.waiting import eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _message(position: int, session_id: str = "s1") -> Message:
    return Message(f"m{position}", session_id, position, Role.USER, "x", NOW)


async def test_concurrent_units_of_work_take_turns_and_every_commit_is_on_disk(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path
) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.commit()
    inside = 0
    most_inside = 0

    async def add_one(position: int) -> None:
        nonlocal inside, most_inside
        async with uows(TENANT) as uow:
            session = await uow.sessions.get("s1")
            assert session is not None
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0)  # let the others try to get in
            await uow.messages.add(_message(position))
            # Read, then write: lost updates would show if two transactions overlapped.
            await uow.sessions.record_activity("s1", NOW, message_count=session.message_count + 1)
            inside -= 1
            await uow.commit()

    await asyncio.gather(*(add_one(position) for position in range(1, 41)))
    assert most_inside == 1
    assert _rows(db_file, "SELECT count(*), max(position) FROM messages") == [(40, 40)]
    assert _rows(db_file, "SELECT message_count FROM sessions") == [(40,)]


async def test_leaving_after_a_commit_does_not_touch_the_next_unit_of_works_transaction(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path
) -> None:
    async with uows(TENANT) as first:
        await first.sessions.add(Session("s1", "coder", NOW, NOW))
        await first.commit()  # first is done with the connection, but still open
        async with uows(TENANT) as second:
            await second.sessions.add(Session("s2", "coder", NOW, NOW))
            await first.rollback()  # what leaving does: must not roll back second's work
            await second.commit()
    assert _rows(db_file, "SELECT session_id FROM sessions ORDER BY 1") == [("s1",), ("s2",)]


async def test_a_unit_of_work_cancelled_mid_transaction_leaves_nothing_and_frees_the_lock(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path
) -> None:
    holding = asyncio.Event()

    async def write_then_hang() -> None:
        async with uows(TENANT) as uow:
            await uow.sessions.add(Session("s1", "coder", NOW, NOW))
            await uow.messages.add(_message(1))
            holding.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(write_then_hang())
    await holding.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert _rows(db_file, "SELECT count(*) FROM sessions") == [(0,)]
    # Another process gets the write lock at once.
    with sqlite3.connect(db_file, timeout=0) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    async with uows(TENANT) as uow:  # and so does this process's next unit of work
        await uow.sessions.add(Session("s2", "coder", NOW, NOW))
        await uow.commit()
    assert _rows(db_file, "SELECT session_id FROM sessions") == [("s2",)]


async def test_a_cancelled_commit_finishes_whole_before_the_next_unit_of_work_starts(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path
) -> None:
    release = threading.Event()
    blockers: list[asyncio.Future[bool]] = []
    committing = asyncio.Event()

    async def write_and_commit() -> None:
        async with uows(TENANT) as uow:
            await uow.sessions.add(Session("s1", "coder", NOW, NOW))
            await uow.messages.add(_message(1))
            # Hold the writer's thread: the COMMIT queues behind this until released.
            writer = uows._writer
            assert writer is not None
            blockers.append(
                asyncio.get_running_loop().run_in_executor(writer.executor, release.wait)
            )
            committing.set()
            await uow.commit()

    task = asyncio.create_task(write_and_commit())
    await committing.wait()
    await asyncio.sleep(0)  # the task is now awaiting its COMMIT, queued behind the blocker
    task.cancel()
    second = asyncio.create_task(_add_session(uows, "s2"))
    for _ in range(20):
        await asyncio.sleep(0)
    # The commit has not run yet, so the writer stays taken: nobody else is let in.
    assert not second.done() and not task.done()
    release.set()
    await asyncio.gather(task, return_exceptions=True)
    await second
    # The cancelled caller's commit ran whole: both of its rows, then the next one's.
    assert _rows(db_file, "SELECT session_id FROM sessions ORDER BY session_id") == [
        ("s1",),
        ("s2",),
    ]
    assert _rows(db_file, "SELECT count(*) FROM messages") == [(1,)]


async def _add_session(uows: SqlAlchemyUnitOfWorkFactory, session_id: str) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
        await uow.commit()


@pytest.mark.parametrize("connected", [False, True], ids=["connecting", "connected"])
async def test_a_lock_held_by_another_process_waits_off_the_event_loop(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path, connected: bool
) -> None:
    if connected:  # BEGIN is then first tried inline, finds the lock taken, waits on the thread
        await _add_session(uows, "s0")
    other = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        writing = asyncio.create_task(_add_session(uows, "s1"))
        ticks = 0

        async def loop_runs() -> bool:
            nonlocal ticks
            ticks += 1
            return ticks > 20

        # The loop keeps running while the unit of work waits for the lock.
        await eventually(loop_runs, what="the event loop to keep running")
        assert not writing.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    await writing
    expected = [("s0",), ("s1",)] if connected else [("s1",)]
    assert _rows(db_file, "SELECT session_id FROM sessions ORDER BY session_id") == expected


async def test_a_read_only_database_is_storage_unavailable(db_file: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///file:{db_file}?mode=ro&uri=true")
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        async with uows(TENANT) as uow:
            with pytest.raises(StorageUnavailable) as caught:
                await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        assert "readonly" in caught.value.message
    finally:
        await uows.close()
        await engine.dispose()


_CRASH_MID_TRANSACTION = """
import asyncio, os, sys
from datetime import UTC, datetime
from agent_runtime.domain.model import Message, Role, Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.sqlite_writer import SqliteWriter
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory

async def main() -> None:
    now = datetime.now(UTC)
    uows = SqlAlchemyUnitOfWorkFactory(create_engine(f"sqlite+aiosqlite:///{sys.argv[1]}"))
    async with uows("default") as uow:
        await uow.sessions.add(Session("committed", "coder", now, now))
        await uow.commit()
    async with uows("default") as uow:
        await uow.sessions.add(Session("crashed", "coder", now, now))
        await uow.messages.add(Message("m1", "crashed", 1, Role.USER, "x", now))
        print("written", flush=True)
        os._exit(9)  # the process dies here, inside the transaction

asyncio.run(main())
"""


async def test_a_process_dying_mid_transaction_leaves_only_what_it_committed(
    db_file: Path,
) -> None:
    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASH_MID_TRANSACTION,
        str(db_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await crashed.communicate()
    assert crashed.returncode == 9, err.decode()
    assert out.decode().strip() == "written"
    assert _rows(db_file, "SELECT session_id FROM sessions") == [("committed",)]
    assert _rows(db_file, "SELECT count(*) FROM messages") == [(0,)]


async def test_a_full_disk_fails_the_unit_of_work_and_the_writer_recovers_with_the_space(
    tiny_disk: Path, tiny_disk_uows: SqlAlchemyUnitOfWorkFactory
) -> None:
    db_file, uows = tiny_disk / "runtime.db", tiny_disk_uows
    await _add_session(uows, "before")
    filler = fill(tiny_disk)
    for attempt in range(3):  # each fails whole, and the next one begins cleanly
        with pytest.raises(StorageUnavailable) as caught:
            async with uows(TENANT) as uow:
                await uow.sessions.add(Session(f"full{attempt}", "coder", NOW, NOW))
                for position in range(1, 200):
                    await uow.messages.add(
                        Message(
                            f"m{attempt}-{position}",
                            f"full{attempt}",
                            position,
                            Role.USER,
                            "x" * 3000,
                            NOW,
                        )
                    )
                await uow.commit()
        assert "full" in caught.value.message
    filler.unlink()
    await _add_session(uows, "after")
    assert _rows(db_file, "SELECT session_id FROM sessions ORDER BY 1") == [("after",), ("before",)]
    assert _rows(db_file, "SELECT count(*) FROM messages") == [(0,)]


async def test_a_writer_collected_on_its_own_thread_shuts_down_without_waiting_for_itself(
    db_file: Path,
) -> None:
    # The garbage collector runs a dropped writer's finaliser on whichever thread collects
    # it, the writer's own included; joining itself there would raise.
    writer = SqliteWriter(make_url(f"sqlite:///{db_file}"))
    await asyncio.get_running_loop().run_in_executor(writer.executor, writer._finalizer)
    assert not writer._finalizer.alive


async def test_a_transaction_the_database_rolled_back_is_never_reported_committed(
    uows: SqlAlchemyUnitOfWorkFactory, db_file: Path
) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        # What SQLite does by itself after SQLITE_FULL or an I/O error: the transaction is
        # gone, and the driver's commit would quietly do nothing.
        writer = uows._writer
        assert writer is not None
        connection = writer.open_connection()
        assert connection is not None
        connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        with pytest.raises(StorageUnavailable):
            await uow.commit()
    assert _rows(db_file, "SELECT count(*) FROM sessions") == [(0,)]
    await _add_session(uows, "s2")  # and the writer carries on
    assert _rows(db_file, "SELECT session_id FROM sessions") == [("s2",)]
