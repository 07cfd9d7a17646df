"""WriterSession: one unit of work's use of the SQLite writer (sqlite_writer.py), the
Database its repositories run on.

BEGIN IMMEDIATE is first tried inline with the busy timeout at 0: in one process (the usual
case: our units of work take turns at the gate) it succeeds at once; when another process
holds the write lock, it is retried on the writer's thread, waiting up to the busy timeout.
Only the driver's COMMIT (the fsync) runs on that thread; ROLLBACK does not fsync and runs
inline. When others are queued at the gate, a commit joins them into one transaction and
one COMMIT (group_commit.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Executable
from sqlalchemy.exc import DBAPIError

from agent_runtime.infrastructure.db.engine import SQLITE_BUSY_TIMEOUT_MS
from agent_runtime.infrastructure.db.group_commit import BatchLost, CommitBatch
from agent_runtime.infrastructure.db.guarded_session import guard_sync as _guarded
from agent_runtime.infrastructure.db.sqlite_driver import (
    commit_open_transaction,
    end_transaction,
    is_busy,
    raw_connection,
    run_raw,
    set_busy_timeout,
    still_open,
)

if TYPE_CHECKING:
    from agent_runtime.infrastructure.db.sqlite_writer import SqliteWriter


class WriterSession:
    """One unit of work's use of the writer: the Database the repositories run on.

    The gate is taken at the first statement and given back when the unit of work's part of
    the transaction ends (commit, rollback or close), never while the writer's thread still
    works for it. Its part is the whole transaction, or, when it finds a batch open (see
    group_commit.py), a SAVEPOINT in the batch's transaction.
    """

    def __init__(self, writer: SqliteWriter) -> None:
        self._writer = writer
        self._holding = False
        self._began = False  # our part of a transaction is open
        self._joined: CommitBatch | None = None  # the batch our part is in, if any
        self._lost: BatchLost | None = None  # our batch failed: nothing more until rollback
        self._connection: Connection | None = None
        # The repositories' marked statements, run on the sqlite3 connection itself.
        self._hot = writer.hot_statements

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        return await self._run(statement, params, _whole)

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        return await self._run(statement, params, _first_value)

    async def scalars(self, statement: Executable, params: Any = None) -> Any:
        return await self._run(statement, params, _first_values)

    async def _run(self, statement: Executable, params: Any, take: Callable[[Any], Any]) -> Any:
        """The statement's result, as `take` wants it, on its plan if it has one (marked
        hot), else through SQLAlchemy; `take` runs inside the guard too."""
        connection = await self._begin()
        plan = self._hot.plan(statement, params)
        if plan is None:
            return _guarded(lambda: take(connection.execute(statement, params)))
        return _guarded(lambda: take(plan.run(raw_connection(connection), params)))

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        self._check_not_lost()
        if not self._holding:
            return  # nothing begun; the connection may be another unit of work's by now
        if not self._began:
            self._leave()  # the BEGIN failed: nothing to commit
            return
        connection = self._connection
        assert connection is not None
        batch = self._joined
        if batch is None and self._writer.gate.waiting:
            # Others are queued: they write into this transaction, and one COMMIT follows.
            _guarded(lambda: still_open(connection))
            batch = self._writer.open_batch()
        if batch is not None:
            if batch is self._joined:
                _guarded(lambda: _release_savepoint(connection))
            if on_committed is not None:  # our part is the batch's now: it lands with it
                batch.when_committed(on_committed)
            self._leave()
            await self._outcome_of(batch)
            return
        # Only the driver's COMMIT (the fsync) runs on the writer's thread: the less Python
        # that thread runs, the less it contends with the event loop for the GIL. SQLAlchemy
        # then closes its transaction inline, with nothing left to commit.
        await self._writer.on_thread(lambda: commit_open_transaction(connection))
        if on_committed is not None:
            on_committed()
        _guarded(connection.commit)
        self._leave()

    async def rollback(self) -> None:
        self._lost = None
        if not self._holding:
            return
        joined = self._joined if self._began else None
        try:
            if joined is not None:
                self._roll_back_part(joined)
            elif self._writer.batch is None:  # our transaction, or what a failed BEGIN left
                _guarded(lambda: end_transaction(self._connection))
            # else our part never began, and the batch's transaction is not ours to end
        finally:
            self._leave()
        if joined is not None:
            # We may have read what the members before us wrote: whatever we answer from it
            # goes out only once it is on disk, or as BatchLost if it never gets there.
            await joined.wait()

    async def close(self) -> None:
        await self.rollback()

    async def _outcome_of(self, batch: CommitBatch) -> None:
        try:
            await batch.wait()
        except BatchLost as lost:
            self._lost = lost
            raise

    def _check_not_lost(self) -> None:
        if self._lost is not None:
            # Our writes before it are gone: committing what follows alone would be half.
            raise BatchLost(f"an earlier commit of this unit of work failed: {self._lost}")

    async def _begin(self) -> Connection:
        self._check_not_lost()
        if not self._holding:
            await self._writer.gate.acquire()
            self._holding = True
        if self._began:
            assert self._connection is not None
            return self._connection
        batch = self._writer.batch
        connection = self._writer.open_connection()
        if batch is not None and (
            connection is None or not raw_connection(connection).in_transaction
        ):
            self._writer.fail_batch(batch, "the database rolled back a shared transaction")
            batch = None
        if batch is not None:
            assert connection is not None
            try:
                _guarded(lambda: _savepoint(connection))
            except BaseException:
                self._writer.fail_batch(batch, "the database refused a unit of work's SAVEPOINT")
                _guarded(lambda: end_transaction(connection))
                raise
            self._connection, self._joined = connection, batch
        else:
            if connection is not None and _guarded(lambda: _begin(connection, wait=False)):
                self._connection = connection
            else:

                def begin_waiting() -> None:
                    self._connection = connection = self._writer.connection()
                    _begin(connection, wait=True)

                await self._writer.on_thread(begin_waiting)
            assert self._connection is not None
        self._began = True
        return self._connection

    def _roll_back_part(self, batch: CommitBatch) -> None:
        """Undoes our part of a batch's transaction; the others' parts stay."""
        connection = self._connection
        assert connection is not None
        if batch is self._writer.batch and raw_connection(connection).in_transaction:
            try:
                _guarded(lambda: _roll_back_to_savepoint(connection))
            except BaseException as exc:
                # Our writes may still be in the batch: it must not commit them.
                self._writer.fail_batch(batch, "a unit of work's part could not be undone")
                with contextlib.suppress(Exception):
                    _guarded(lambda: end_transaction(connection))
                if isinstance(exc, Exception):
                    # What we read of the others' writes is void too: we hear it as they
                    # do (a StorageUnavailable would be swallowed by the rollback's caller).
                    raise BatchLost(f"a unit of work's part could not be undone: {exc}") from exc
                raise
            return
        # SQLite rolled the whole transaction back by itself (SQLITE_FULL, an I/O error):
        # every member's writes are gone, so none of them may be reported committed.
        self._writer.fail_batch(batch, "the database rolled back a shared transaction")
        _guarded(lambda: end_transaction(connection))

    def _leave(self) -> None:
        if self._holding:
            self._holding = False
            self._began = False
            self._joined = None
            self._writer.gate.release()


def _begin(connection: Connection, *, wait: bool) -> bool:
    """BEGIN IMMEDIATE, then the SQLAlchemy transaction around it (pysqlite's own BEGIN is
    off: isolation_level None). Without `wait`, False if another process holds the lock."""
    end_transaction(connection)  # one a failed COMMIT may have left open
    raw = raw_connection(connection)
    if wait:
        run_raw(raw, "BEGIN IMMEDIATE")  # waits up to the busy timeout
    else:
        set_busy_timeout(connection, 0)
        try:
            run_raw(raw, "BEGIN IMMEDIATE")
        except DBAPIError as exc:
            if is_busy(exc.orig):
                return False
            raise
        finally:
            set_busy_timeout(connection, SQLITE_BUSY_TIMEOUT_MS)
    connection.begin()
    return True


def _savepoint(connection: Connection) -> None:
    run_raw(still_open(connection), "SAVEPOINT unit_of_work")


def _release_savepoint(connection: Connection) -> None:
    run_raw(still_open(connection), "RELEASE unit_of_work")


def _roll_back_to_savepoint(connection: Connection) -> None:
    raw = raw_connection(connection)
    run_raw(raw, "ROLLBACK TO unit_of_work")
    run_raw(raw, "RELEASE unit_of_work")


# What execute(), scalar() and scalars() take of a result (SQLAlchemy's or a plan's).
def _whole(result: Any) -> Any:
    return result


def _first_value(result: Any) -> Any:
    return result.scalar()


def _first_values(result: Any) -> Any:
    return result.scalars()
