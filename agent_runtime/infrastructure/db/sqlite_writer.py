"""SQLite: one connection for every writing unit of work of the process, one thread hop per
transaction.

Units of work that only read (uow_factory.reader) do not come here: they read beside the
writer on read-only connections of their own (sqlite_readers.py), never take the gate and
never wait for a commit. In WAL mode they do not block the writer either.

SQLite has one writer at a time, so our units of work already take turns (the gate). A
statement on a local file whose pages are cached takes microseconds, less than handing it
to a thread and back: through AsyncSession + aiosqlite each statement cost about 175 µs of
CPU, most of it the hop and the greenlet bridge (docs/benchmarks/README.md). So here the
statements run inline on the event loop's thread, on a plain synchronous connection, and
only what can wait runs on the writer's own thread:

- COMMIT, which waits for fsync (WAL, synchronous=FULL): a commit is durable when it returns;
- BEGIN IMMEDIATE, but only when the write lock is taken by another process. It is first
  tried inline with the busy timeout set to 0, which fails at once instead of waiting; in
  one process (the usual case, our units of work take turns) it succeeds, saving a hop of
  about 0.2 ms per transaction. On SQLITE_BUSY it is retried on the thread, waiting up to
  the busy timeout. Opening the connection (its PRAGMAs may wait too) also runs there.

Inside a transaction that began IMMEDIATE nothing else waits for a lock in WAL mode. A
ROLLBACK does not fsync either, so it runs inline too, where no cancellation can cut it.
Durability is the same as before: the caller resumes after COMMIT has returned.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.infrastructure.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_sqlite_writer_engine,
)
from agent_runtime.infrastructure.db.guarded_session import guard_sync as _guarded
from agent_runtime.infrastructure.db.thread_calls import ThreadCalls

T = TypeVar("T")

_THREAD_NAME = "sqlite-writer"


class SqliteWriter:
    """Owns the connection, the thread that begins and commits on it, and the gate that
    lets one unit of work at a time use it."""

    def __init__(self, url: URL) -> None:
        self._engine: Engine = create_sqlite_writer_engine(url)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)
        self._connection: Connection | None = None
        self.gate = asyncio.Lock()
        # A writer dropped without close() (tests make many) still ends its thread and file.
        self._finalizer = weakref.finalize(self, _shut, self._thread, self._engine)

    def session(self) -> WriterSession:
        return WriterSession(self)

    async def close(self) -> None:
        """Waits for a commit still running, then closes the connection and the thread."""
        async with self.gate:
            await asyncio.get_running_loop().run_in_executor(None, self._finalizer)

    def connection(self) -> Connection:
        if self._connection is None or self._connection.closed:
            self._connection = self._engine.connect()
        return self._connection

    def open_connection(self) -> Connection | None:
        """The connection if it is open (nothing to wait for), else None."""
        if self._connection is None or self._connection.closed:
            return None
        return self._connection

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The writer's one thread: where BEGIN may wait for a lock and COMMIT for fsync."""
        return self._thread


def _shut(thread: ThreadPoolExecutor, engine: Engine) -> None:
    # A writer collected by the garbage collector runs this on whichever thread collected
    # it, possibly the writer's own thread, which cannot wait for itself to end.
    thread.shutdown(wait=not threading.current_thread().name.startswith(_THREAD_NAME))
    engine.dispose()  # closes the StaticPool's one connection


class WriterSession:
    """One unit of work's use of the writer: the Database the repositories run on.

    The gate is taken at the first statement and given back when the transaction ends
    (commit, rollback or close), never while the writer's thread still works for it.
    """

    def __init__(self, writer: SqliteWriter) -> None:
        self._writer = writer
        self._holding = False
        self._connection: Connection | None = None
        self._thread_calls = ThreadCalls(writer.executor)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        connection = await self._begin()
        return _guarded(lambda: connection.execute(*args, **kwargs))

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        connection = await self._begin()
        return _guarded(lambda: connection.scalar(*args, **kwargs))

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        connection = await self._begin()
        return _guarded(lambda: connection.scalars(*args, **kwargs))

    async def commit(self) -> None:
        if not self._holding:
            return  # nothing begun; the connection may be another unit of work's by now
        if self._connection is None or not self._connection.in_transaction():
            self._leave()  # the BEGIN failed: nothing to commit
            return
        connection = self._connection
        # Only the driver's COMMIT (the fsync) runs on the writer's thread: the less Python
        # that thread runs, the less it contends with the event loop for the GIL. SQLAlchemy
        # then closes its transaction inline, with nothing left to commit.
        await self._thread_calls.run(lambda: _commit(connection))
        _guarded(connection.commit)
        self._leave()

    async def rollback(self) -> None:
        if not self._holding:
            return
        await self._thread_calls.settle()
        try:
            _guarded(lambda: _end_transaction(self._connection))
        finally:
            self._leave()

    async def close(self) -> None:
        await self.rollback()

    async def _begin(self) -> Connection:
        if not self._holding:
            await self._writer.gate.acquire()
            self._holding = True
        if self._connection is None or not self._connection.in_transaction():
            connection = self._writer.open_connection()
            if connection is not None and _guarded(lambda: _begin(connection, wait=False)):
                self._connection = connection
            else:

                def begin_waiting() -> None:
                    self._connection = connection = self._writer.connection()
                    _begin(connection, wait=True)

                await self._thread_calls.run(begin_waiting)
            assert self._connection is not None
        return self._connection

    def _leave(self) -> None:
        if self._holding and self._thread_calls.idle:
            self._holding = False
            self._writer.gate.release()


def _begin(connection: Connection, *, wait: bool) -> bool:
    """BEGIN IMMEDIATE, then the SQLAlchemy transaction around it (pysqlite's own BEGIN is
    off: isolation_level None). Without `wait`, False if another process holds the lock."""
    _end_transaction(connection)  # one a failed COMMIT may have left open
    raw: Any = connection.connection.dbapi_connection
    try:
        if wait:
            raw.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout
        else:
            raw.execute("PRAGMA busy_timeout=0")
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    return False
                raise
            finally:
                raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:  # as SQLAlchemy would wrap it, for translate_error
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
    connection.begin()
    return True


def _commit(connection: Connection) -> None:
    raw: Any = connection.connection.dbapi_connection
    if not raw.in_transaction:
        # SQLite itself rolled the transaction back (after SQLITE_FULL, IOERR...): the
        # driver's commit would do nothing and report success.
        raise StorageUnavailable("the database rolled the transaction back before its commit")
    try:
        raw.commit()
    except sqlite3.Error as exc:  # as SQLAlchemy would wrap it, for translate_error
        raise DBAPIError.instance("COMMIT", None, exc, sqlite3.Error) from exc


def _end_transaction(connection: Connection | None) -> None:
    """Rolls back whatever is open, as SQLAlchemy sees it and as SQLite does."""
    if connection is None or connection.closed:
        return
    # Also a transaction SQLAlchemy deactivated when its COMMIT failed (e.g. disk full):
    # it stays attached, not in_transaction(), and blocks the next begin() until this.
    connection.rollback()
    raw = connection.connection.dbapi_connection
    if raw is not None and raw.in_transaction:
        raw.rollback()
