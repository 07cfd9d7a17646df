"""Group commit on the SQLite writer, on a real file: units of work queued at the writer
share one transaction and one COMMIT, each commit() returns only once its rows are on disk,
one member's rollback leaves the others' parts, and a batch whose transaction is lost fails
every member (no commit() reports what is not on disk)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_runtime.application.ports import CommitScope
from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import Message, Role, Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.group_commit import BatchLost
from agent_runtime.infrastructure.db.sqlite_writer import SqliteWriter
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWork
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.integration.conftest import rows_in
from tests.support.tiny_disk import fill
from tests.support.waiting import FOREVER, eventually

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SESSIONS = "SELECT session_id FROM sessions ORDER BY session_id"


def _writer(uows: SqlAlchemyUnitOfWorkFactory) -> SqliteWriter:
    writer = uows._writer
    assert writer is not None
    return writer


async def _add_session(uows: SqlAlchemyUnitOfWorkFactory, session_id: str) -> None:
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
        await uow.commit()


def _statements_traced(uows: SqlAlchemyUnitOfWorkFactory) -> list[str]:
    """Every statement the writer's connection runs from now on (COMMITs included)."""
    connection = _writer(uows).open_connection()
    assert connection is not None
    statements: list[str] = []
    connection.connection.dbapi_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
    return statements


class _Holder:
    """A unit of work that writes, then holds the writer until let go, then does `last`."""

    def __init__(self, uows: SqlAlchemyUnitOfWorkFactory, session_id: str) -> None:
        self.holding = asyncio.Event()
        self.go = asyncio.Event()
        self._uows, self._session_id = uows, session_id

    async def run(self, last: Callable[[SqlAlchemyUnitOfWork], Awaitable[None]]) -> None:
        async with self._uows(TENANT) as uow:
            await uow.sessions.add(Session(self._session_id, "coder", NOW, NOW))
            self.holding.set()
            await self.go.wait()
            await last(uow)


async def _commit(uow: SqlAlchemyUnitOfWork) -> None:
    await uow.commit()


class _Scene:
    """Units of work on one writer, started and queued on cue; whatever a failed test
    leaves waiting is let go and ended, so that the writer can close."""

    def __init__(self, uows: SqlAlchemyUnitOfWorkFactory) -> None:
        self.uows = uows
        self.writer = _writer(uows)
        self._holders: list[_Holder] = []
        self._tasks: list[asyncio.Task[None]] = []

    def holder(self, session_id: str) -> _Holder:
        holder = _Holder(self.uows, session_id)
        self._holders.append(holder)
        return holder

    async def hold(
        self,
        session_id: str,
        last: Callable[[SqlAlchemyUnitOfWork], Awaitable[None]] = _commit,
    ) -> tuple[_Holder, asyncio.Task[None]]:
        """A unit of work that has written and holds the writer until its `go`."""
        holder = self.holder(session_id)
        task = self._start(holder.run(last))
        await holder.holding.wait()
        return holder, task

    async def queue(self, *work: Callable[[], Awaitable[None]]) -> list[asyncio.Task[None]]:
        """Starts `work`, each of which queues at the writer's gate, and returns once all
        are queued."""
        tasks = [self._start(each()) for each in work]

        async def all_queued() -> bool:
            return self.writer.gate.waiting == len(work)

        await eventually(all_queued, what="the units of work to queue at the writer")
        return tasks

    @asynccontextmanager
    async def commit_held(self, first: _Holder) -> AsyncIterator[None]:
        """Lets `first` go and holds the batch's COMMIT once it has started (the writer's
        thread is kept busy, so the COMMIT queues behind that) until the block ends."""
        writer = self.writer
        release = threading.Event()
        blocker = asyncio.get_running_loop().run_in_executor(writer.executor, release.wait)
        try:
            first.go.set()

            async def flush_is_committing() -> bool:
                return writer.batch is None and bool(writer._flushes) and writer.gate.locked()

            await eventually(flush_is_committing, what="the batch's COMMIT to start")
            yield
        finally:
            release.set()
            await blocker

    def _start(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.append(task)
        return task

    async def end(self) -> None:
        for holder in self._holders:
            holder.go.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def scene(uows: SqlAlchemyUnitOfWorkFactory) -> AsyncIterator[_Scene]:
    await _add_session(uows, "s0")  # opens the writer's connection
    scene = _Scene(uows)
    yield scene
    await scene.end()


async def test_units_of_work_queued_at_the_writer_share_one_commit_and_return_when_on_disk(
    scene: _Scene, db_file: Path
) -> None:
    statements = _statements_traced(scene.uows)
    found_when_returned: dict[str, list[tuple[object, ...]]] = {}

    def found(session_id: str) -> list[tuple[object, ...]]:
        """What another process finds of session_id's rows."""
        sql = f"SELECT session_id FROM sessions WHERE session_id = '{session_id}'"
        return rows_in(db_file, sql)

    async def first_commits(uow: SqlAlchemyUnitOfWork) -> None:
        await uow.commit()
        found_when_returned["a"] = found("a")

    async def add(session_id: str) -> None:
        async with scene.uows(TENANT) as uow:
            await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
            await uow.messages.add(Message(f"m-{session_id}", session_id, 1, Role.USER, "x", NOW))
            await uow.commit()
            found_when_returned[session_id] = found(session_id)

    first, holder = await scene.hold("a", first_commits)
    queued = await scene.queue(*(lambda n=n: add(f"q{n}") for n in range(3)))
    first.go.set()
    await asyncio.gather(holder, *queued)

    assert statements.count("COMMIT") == 1
    assert statements.count("SAVEPOINT unit_of_work") == 3
    assert found_when_returned == {name: [(name,)] for name in ("a", "q0", "q1", "q2")}
    assert rows_in(db_file, SESSIONS) == [("a",), ("q0",), ("q1",), ("q2",), ("s0",)]
    assert rows_in(db_file, "SELECT count(*) FROM messages") == [(3,)]


async def test_a_unit_of_work_alone_at_the_writer_commits_at_once(
    scene: _Scene, db_file: Path
) -> None:
    statements = _statements_traced(scene.uows)
    await _add_session(scene.uows, "s1")
    await _add_session(scene.uows, "s2")
    assert statements.count("COMMIT") == 2
    assert not any(statement.startswith("SAVEPOINT") for statement in statements)
    assert rows_in(db_file, SESSIONS) == [("s0",), ("s1",), ("s2",)]


async def test_a_member_rolling_back_leaves_out_only_its_own_part(
    scene: _Scene, db_file: Path
) -> None:
    statements = _statements_traced(scene.uows)

    class Refused(Exception):
        pass

    async def fails_after_writing() -> None:
        async with scene.uows(TENANT) as uow:
            await uow.sessions.add(Session("refused", "coder", NOW, NOW))
            await uow.messages.add(Message("m-refused", "refused", 1, Role.USER, "x", NOW))
            raise Refused

    first, holder = await scene.hold("a")
    queued = await scene.queue(fails_after_writing, lambda: _add_session(scene.uows, "after"))
    first.go.set()
    results = await asyncio.gather(holder, *queued, return_exceptions=True)

    assert results[0] is None and isinstance(results[1], Refused) and results[2] is None
    assert statements.count("COMMIT") == 1
    assert rows_in(db_file, SESSIONS) == [("a",), ("after",), ("s0",)]
    assert rows_in(db_file, "SELECT count(*) FROM messages") == [(0,)]


async def test_nothing_of_a_batch_is_visible_or_reported_committed_before_its_commit(
    scene: _Scene, db_file: Path
) -> None:
    first, holder = await scene.hold("a")
    (second,) = await scene.queue(lambda: _add_session(scene.uows, "b"))
    async with scene.commit_held(first):
        assert not holder.done() and not second.done()
        assert rows_in(db_file, SESSIONS) == [("s0",)]  # another process sees none of it
        async with scene.uows.reader(TENANT) as reader:  # and neither does a reader here
            assert await reader.sessions.get("a") is None
            assert await reader.sessions.get("b") is None
    await asyncio.gather(holder, second)
    assert rows_in(db_file, SESSIONS) == [("a",), ("b",), ("s0",)]


async def test_a_cancelled_member_still_commits_with_its_batch_and_the_others_return(
    scene: _Scene, db_file: Path
) -> None:
    first, holder = await scene.hold("a")
    second = scene.holder("b")
    (joined,) = await scene.queue(lambda: second.run(_commit))
    first.go.set()
    await second.holding.wait()  # b is in the batch's transaction; a waits for its COMMIT
    assert scene.writer.batch is not None and not holder.done()
    holder.cancel()
    second.go.set()
    await joined
    with pytest.raises(asyncio.CancelledError):
        await holder
    # a's caller stopped waiting, but its writes were in the batch: committed with it, as a
    # cancelled COMMIT of its own would have been.
    assert rows_in(db_file, SESSIONS) == [("a",), ("b",), ("s0",)]
    await _add_session(scene.uows, "after")  # and the writer carries on
    assert rows_in(db_file, SESSIONS) == [("a",), ("after",), ("b",), ("s0",)]


def _lose_the_transaction(writer: SqliteWriter) -> None:
    """What SQLite does by itself after SQLITE_FULL or an I/O error in a statement: the
    whole transaction is gone, every member's part with it."""
    connection = writer.open_connection()
    assert connection is not None
    connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]


@pytest.mark.parametrize("lost", [False, True], ids=["committed", "lost"])
async def test_a_batch_wakes_the_waiters_of_its_members_events_once_committed_and_only_then(
    scene: _Scene, db_file: Path, lost: bool
) -> None:
    signal = scene.uows.signal
    before = signal.generation()
    watchers = [
        asyncio.create_task(signal.wait(before, FOREVER, CommitScope(TENANT, session_id)))
        for session_id in ("a", "b")
    ]

    def commit_an_event_of(session_id: str) -> Callable[[SqlAlchemyUnitOfWork], Awaitable[None]]:
        async def commit(uow: SqlAlchemyUnitOfWork) -> None:
            await uow.events.add(Event(EventType.TURN_FAILED, session_id, NOW, "t1"))
            if lost and session_id == "b":
                _lose_the_transaction(scene.writer)
            await uow.commit()

        return commit

    first, holder = await scene.hold("a", commit_an_event_of("a"))
    second = scene.holder("b")
    (joined,) = await scene.queue(lambda: second.run(commit_an_event_of("b")))
    first.go.set()
    await second.holding.wait()  # b is in the batch's transaction; a waits for its COMMIT
    holder.cancel()  # a's caller stops waiting; its events commit, or not, with the batch
    second.go.set()
    await asyncio.gather(holder, joined, return_exceptions=True)

    assert holder.cancelled()
    if lost:
        assert rows_in(db_file, SESSIONS) == [("s0",)]
        assert signal.generation() == before  # nobody woken for what did not land
        assert not any(watcher.done() for watcher in watchers)
        for watcher in watchers:
            watcher.cancel()
        return
    assert rows_in(db_file, SESSIONS) == [("a",), ("b",), ("s0",)]
    assert signal.generation() == before + 2, "a member's events landed but woke nobody"
    await asyncio.gather(*watchers)  # woken, though they would otherwise poll after FOREVER


async def test_a_batch_whose_transaction_the_database_rolled_back_fails_every_member(
    scene: _Scene, db_file: Path
) -> None:
    async def lose_the_transaction(uow: SqlAlchemyUnitOfWork) -> None:
        _lose_the_transaction(scene.writer)
        await uow.commit()

    first, holder = await scene.hold("a")
    second = scene.holder("b")
    (joined,) = await scene.queue(lambda: second.run(lose_the_transaction))
    first.go.set()
    await second.holding.wait()
    second.go.set()
    results = await asyncio.gather(holder, joined, return_exceptions=True)

    assert all(isinstance(result, StorageUnavailable) for result in results), results
    assert rows_in(db_file, SESSIONS) == [("s0",)]
    await _add_session(scene.uows, "after")  # and the writer carries on
    assert rows_in(db_file, SESSIONS) == [("after",), ("s0",)]


async def test_a_batch_whose_commit_fails_fails_every_member_and_the_writer_carries_on(
    scene: _Scene, db_file: Path
) -> None:
    first, holder = await scene.hold("a")
    second = scene.holder("b")
    (joined,) = await scene.queue(lambda: second.run(lambda uow: _spoil_then_commit(scene, uow)))
    first.go.set()
    await second.holding.wait()
    second.go.set()
    results = await asyncio.gather(holder, joined, return_exceptions=True)

    assert all(isinstance(result, StorageUnavailable) for result in results), results
    assert "FOREIGN KEY" in str(results[0])
    assert rows_in(db_file, SESSIONS) == [("s0",)]
    await _add_session(scene.uows, "after")
    assert rows_in(db_file, SESSIONS) == [("after",), ("s0",)]


async def _spoil_then_commit(scene: _Scene, uow: SqlAlchemyUnitOfWork) -> None:
    """A message of a session that does not exist, its foreign key checked at COMMIT: the
    statements all succeed, and the batch's one COMMIT fails."""
    connection = scene.writer.open_connection()
    assert connection is not None
    connection.connection.dbapi_connection.execute("PRAGMA defer_foreign_keys=ON")  # type: ignore[union-attr]
    await uow.messages.add(Message("orphan", "nowhere", 1, Role.USER, "x", NOW))
    await uow.commit()


@pytest.mark.parametrize("lands", [True, False], ids=["batch-commits", "batch-fails"])
async def test_a_member_that_read_the_batch_and_rolls_back_answers_only_once_it_is_settled(
    scene: _Scene, db_file: Path, lands: bool
) -> None:
    found: list[bool] = []

    async def read_then_give_up() -> None:
        # Finds a's session (not yet committed) and answers from it, writing nothing:
        # what a CreateSession that finds the session already there does.
        async with scene.uows(TENANT) as uow:
            found.append(await uow.sessions.get("a") is not None)

    spoil = lambda uow: _spoil_then_commit(scene, uow)  # noqa: E731
    first, holder = await scene.hold("a", _commit if lands else spoil)
    (reader,) = await scene.queue(read_then_give_up)
    async with scene.commit_held(first):
        assert found == [True]  # it has read a's row and left the writer...
        assert not reader.done()  # ...but does not answer before that row is on disk
    results = await asyncio.gather(holder, reader, return_exceptions=True)
    if lands:
        assert list(results) == [None, None]
        assert rows_in(db_file, SESSIONS) == [("a",), ("s0",)]
    else:  # what it read never reached the disk: its answer is void
        assert all(isinstance(result, StorageUnavailable) for result in results), results
        assert rows_in(db_file, SESSIONS) == [("s0",)]


def _release_the_savepoint(writer: SqliteWriter) -> None:
    """Merges the running member's part into the batch's transaction (SQLite's own RELEASE,
    on the writer's real connection), so that its rollback's ROLLBACK TO unit_of_work fails
    with SQLite's "no such savepoint", and its writes are the batch's, to commit with it."""
    connection = writer.open_connection()
    assert connection is not None
    connection.connection.dbapi_connection.execute("RELEASE unit_of_work")  # type: ignore[union-attr]


async def test_a_member_whose_part_cannot_be_undone_fails_the_whole_batch(
    scene: _Scene, db_file: Path
) -> None:
    found: list[bool] = []

    async def write_then_give_up() -> None:
        async with scene.uows(TENANT) as uow:
            found.append(await uow.sessions.get("a") is not None)  # a's row, not yet on disk
            await uow.sessions.add(Session("c", "coder", NOW, NOW))
            _release_the_savepoint(scene.writer)
            # and leaves without committing: its part is to be undone, and cannot be

    first, holder = await scene.hold("a")
    queued = await scene.queue(lambda: _add_session(scene.uows, "b"), write_then_give_up)
    first.go.set()
    results = await asyncio.gather(holder, *queued, return_exceptions=True)

    assert found == [True]
    # The batch holds c's writes that c did not commit: none of it may land. a and b hear
    # that their commits failed, and c that what it read never reached the disk.
    assert all(isinstance(result, BatchLost) for result in results), results
    assert rows_in(db_file, SESSIONS) == [("s0",)]
    with closing(sqlite3.connect(db_file, timeout=0)) as other:
        other.execute("BEGIN IMMEDIATE")  # the lost batch's transaction holds no lock
        other.rollback()
    await _add_session(scene.uows, "after")  # and the writer carries on
    assert rows_in(db_file, SESSIONS) == [("after",), ("s0",)]


async def test_after_a_batch_failed_the_unit_of_work_cannot_commit_until_it_rolls_back(
    scene: _Scene, db_file: Path
) -> None:
    outcomes: list[str] = []

    async def spoil_then_retry(uow: SqlAlchemyUnitOfWork) -> None:
        with pytest.raises(StorageUnavailable):
            await _spoil_then_commit(scene, uow)
        try:
            await uow.commit()
        except StorageUnavailable:
            outcomes.append("refused")
        try:
            await uow.sessions.add(Session("later", "c", NOW, NOW))
        except StorageUnavailable:
            outcomes.append("refused")
        await uow.rollback()  # then it may start again
        await uow.sessions.add(Session("again", "coder", NOW, NOW))
        await uow.commit()

    first, holder = await scene.hold("a", spoil_then_retry)
    (other,) = await scene.queue(lambda: _add_session(scene.uows, "b"))  # makes it a batch
    first.go.set()
    results = await asyncio.gather(holder, other, return_exceptions=True)
    assert isinstance(results[1], StorageUnavailable)  # b was in the failed batch
    assert outcomes == ["refused", "refused"]
    assert rows_in(db_file, SESSIONS) == [("again",), ("s0",)]


async def _cancel_and_let_it_take(task: asyncio.Task[None]) -> None:
    """Cancels `task` and returns once it has run with the CancelledError: cancel() schedules
    that run at once, and the loop runs what is scheduled in order, so a callback scheduled
    after it runs after it."""
    task.cancel()
    loop = asyncio.get_running_loop()
    taken = loop.create_future()
    loop.call_soon(taken.set_result, None)
    await taken


async def test_a_batch_commit_cancelled_twice_still_settles_its_members_as_the_disk_says(
    scene: _Scene, db_file: Path
) -> None:
    first, holder = await scene.hold("a")
    (second,) = await scene.queue(lambda: _add_session(scene.uows, "b"))
    async with scene.commit_held(first):
        (flush,) = scene.writer._flushes  # it holds the gate; its COMMIT waits for the thread
        # c queues behind it: it must not get the writer while the COMMIT is still to run.
        (later,) = await scene.queue(lambda: _add_session(scene.uows, "c"))
        await _cancel_and_let_it_take(flush)  # it stops waiting, and waits for the COMMIT
        assert not flush.done()
        await _cancel_and_let_it_take(flush)  # and again, while it waits for it
    async with asyncio.timeout(10):  # nobody waits forever
        results = await asyncio.gather(holder, second, later, return_exceptions=True)
    assert flush.cancelled()

    reported = {name for name, result in zip("abc", results, strict=True) if result is None}
    on_disk = {str(row[0]) for row in rows_in(db_file, SESSIONS)} - {"s0"}
    assert on_disk == reported, results
    assert all(isinstance(r, StorageUnavailable) for r in results if r is not None), results
    # The COMMIT, cut short by nothing, landed: a and b are committed, and c, let in only
    # once it had, committed after them.
    assert reported == {"a", "b", "c"}


async def test_closing_the_writer_commits_the_batch_it_finds_open(
    scene: _Scene, db_file: Path
) -> None:
    first, holder = await scene.hold("a")
    # The writer closes (shutdown) while a is still writing: a's commit then finds the
    # close queued, so it leaves its transaction to a batch, and the close finds it open.
    closing = (await scene.queue(scene.uows.close))[0]
    first.go.set()
    await asyncio.gather(holder, closing)
    assert rows_in(db_file, SESSIONS) == [("a",), ("s0",)]


async def test_on_a_full_disk_every_member_reported_committed_is_on_disk_and_no_other(
    tiny_disk: Path, tiny_disk_uows: SqlAlchemyUnitOfWorkFactory
) -> None:
    db_file, uows = tiny_disk / "runtime.db", tiny_disk_uows
    await _add_session(uows, "before")
    scene = _Scene(uows)

    async def add_big(session_id: str, uow: SqlAlchemyUnitOfWork) -> None:
        await uow.messages.add(
            Message(f"m-{session_id}", session_id, 1, Role.USER, "x" * 200_000, NOW)
        )
        await uow.commit()

    async def big(session_id: str) -> None:
        async with uows(TENANT) as uow:
            await uow.sessions.add(Session(session_id, "coder", NOW, NOW))
            await add_big(session_id, uow)

    try:
        first, holder = await scene.hold("a", lambda uow: add_big("a", uow))
        queued = await scene.queue(*(lambda n=n: big(f"q{n}") for n in range(3)))
        filler = fill(tiny_disk)
        first.go.set()
        results = await asyncio.gather(holder, *queued, return_exceptions=True)
        filler.unlink()
    finally:
        await scene.end()

    failed = [result for result in results if result is not None]
    assert failed, "the disk was full, yet every commit succeeded"
    assert all(isinstance(result, StorageUnavailable) for result in failed), results
    reported = {
        name
        for name, result in zip(["a", "q0", "q1", "q2"], results, strict=True)
        if result is None
    }
    on_disk = {str(row[0]) for row in rows_in(db_file, SESSIONS)} - {"before"}
    assert on_disk == reported
    await _add_session(uows, "after")  # the writer recovers with the space
    assert ("after",) in rows_in(db_file, SESSIONS)
