"""SQLite: read-only units of work on their own connections, beside the writer.

Reads (WatchEvents polls, following a turn from its log, GetSession, ListSessions, the
pending-approvals gauge, ...) do not take the writer's gate (sqlite_writer.py) and do not
begin a write transaction: in WAL mode a reader never blocks the writer and the writer never
blocks a reader, and a reader sees only committed rows. So a read does not queue behind
commits (each holding the gate through an fsync), and does not delay them either.

Each reading unit of work takes a connection of its own from a few kept open (opened as
needed: a unit of work may hold its connection across awaits, so readers cannot share
one), with `PRAGMA query_only=ON`: a reader cannot write, whatever it runs. It reads in one
deferred transaction (BEGIN at its first statement, ROLLBACK when it ends), so all its
statements see one snapshot.

That snapshot ends with the unit of work, inline (close_now, from unit_of_work.py), not a
turn of the event loop later: while any reader holds a snapshot of the WAL, SQLite cannot
start the WAL over, and hundreds of pollers each holding theirs one loop turn too long
could overlap without end (the WAL would then only grow; sqlite_writer.py bounds it too).

Statements run inline on the event loop's thread, as the writer's do: on cached pages they
take microseconds, less than a hop to a thread and back. A reader waits for a lock only in
rare moments (another connection recovering the WAL after a crash, or one holding the file
in exclusive locking mode), so its busy timeout is 0 and such a statement fails at once;
SQLITE_BUSY is then retried with the full busy timeout on the readers' own few threads
(not the event loop's default executor, which DNS lookups need: a burst of waiting readers
queues there instead), and the event loop keeps running meanwhile. Failures come out as
domain errors (StorageUnavailable), as the writer's do.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from agent_runtime.infrastructure.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_sqlite_reader_engine,
)
from agent_runtime.infrastructure.db.guarded_session import guard_sync
from agent_runtime.infrastructure.db.prepared_statements import PreparedStatements
from agent_runtime.infrastructure.db.sqlite_driver import (
    end_transaction,
    is_busy,
    raw_connection,
    run_raw,
    set_busy_timeout,
)
from agent_runtime.infrastructure.db.thread_calls import ThreadCalls

T = TypeVar("T")

# Idle read connections kept open; more are opened when more readers overlap.
KEEP_IDLE = 4
# Threads on which readers wait for a lock (SQLITE_BUSY). They all wait for the same lock,
# so more threads would not end the wait sooner.
BUSY_THREADS = 2
BUSY_THREAD_NAME = "sqlite-reader"


class SqliteReaders:
    """The read connections to one SQLite file: those idle, how to open another, and the
    threads on which a reader waits for a lock."""

    def __init__(self, url: URL, *, keep_idle: int = KEEP_IDLE) -> None:
        self._engine: Engine = create_sqlite_reader_engine(url)
        self.statements = PreparedStatements(self._engine.dialect)
        self._idle: list[Connection] = []
        self._keep_idle = keep_idle
        self._closed = False
        self.executor = ThreadPoolExecutor(BUSY_THREADS, thread_name_prefix=BUSY_THREAD_NAME)
        # Readers dropped without close() (tests make many) still close their files and
        # end their threads.
        self._finalizer = weakref.finalize(
            self, _close_all, self._idle, self._engine, self.executor
        )

    def session(self) -> ReaderSession:
        return ReaderSession(self)

    def close(self) -> None:
        """Closes the idle connections and ends the threads once idle; the connections in
        use close when their unit of work ends."""
        self._closed = True
        self._finalizer()

    def take(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        # Opening a file takes no lock (the first read does): inline, like the statements.
        return self._engine.connect()

    def give_back(self, connection: Connection) -> None:
        if self._closed or len(self._idle) >= self._keep_idle:
            connection.close()
        else:
            self._idle.append(connection)


def _close_all(idle: list[Connection], engine: Engine, executor: ThreadPoolExecutor) -> None:
    # Not waiting: this may run on one of those threads (the garbage collector's choice),
    # and a call still running there ends by itself (its busy timeout bounds it).
    executor.shutdown(wait=False)
    while idle:
        idle.pop().close()
    engine.dispose()


class ReaderSession:
    """One reading unit of work's connection and read transaction: the Database its
    repositories run on. It cannot commit."""

    def __init__(self, readers: SqliteReaders) -> None:
        self._readers = readers
        self._connection: Connection | None = None
        self._thread_calls = ThreadCalls(readers.executor)
        self._broken = False

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        statements = self._readers.statements
        return await self._run(lambda c: statements.execute(c, statement, params))

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        statements = self._readers.statements
        return await self._run(lambda c: statements.scalar(c, statement, params))

    async def scalars(self, statement: Executable, params: Any = None) -> Any:
        statements = self._readers.statements
        return await self._run(lambda c: statements.scalars(c, statement, params))

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        raise RuntimeError("a read-only unit of work cannot commit")

    async def rollback(self) -> None:
        """Ends the read transaction (the next statement begins another, newer snapshot)."""
        await self._thread_calls.settle()
        self._rollback_now()

    async def close(self) -> None:
        await self._thread_calls.settle()
        self.close_now()

    @property
    def idle(self) -> bool:
        """No call on a thread uses the connection: close_now() may run."""
        return self._thread_calls.idle

    def close_now(self) -> None:
        """Ends the read transaction and gives the connection back (or discards it if it
        broke), inline: the snapshot ends with the unit of work. Only when idle."""
        if not self.idle:
            raise RuntimeError("a call on a thread still uses the reader's connection")
        try:
            self._rollback_now()
        finally:
            connection, self._connection = self._connection, None
            if connection is not None:
                if self._broken:
                    connection.close()
                else:
                    self._readers.give_back(connection)

    def _rollback_now(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            guard_sync(lambda: end_transaction(connection))
        except BaseException:
            self._broken = True
            raise

    async def _run(self, statement: Callable[[Connection], T]) -> T:
        connection = self._begin()
        try:
            return guard_sync(lambda: _unless_busy(connection, statement))
        except _Busy:
            pass
        # A lock another connection holds for a moment: waited for off the event loop.
        return await self._thread_calls.run(lambda: _waiting(connection, statement))

    def _begin(self) -> Connection:
        if self._connection is None:
            self._connection = guard_sync(self._readers.take)
        connection = self._connection
        if not connection.in_transaction():
            guard_sync(lambda: _begin_read(connection))
        return connection


class _Busy(Exception):
    """SQLITE_BUSY inline: the statement is to be run again on a thread."""


def _unless_busy(connection: Connection, statement: Callable[[Connection], T]) -> T:
    try:
        return statement(connection)
    except DBAPIError as exc:
        if is_busy(exc.orig):
            raise _Busy from exc
        raise


def _begin_read(connection: Connection) -> None:
    """A deferred BEGIN (it takes no lock; the first read takes the snapshot), then the
    SQLAlchemy transaction around it (the driver's own BEGIN is off)."""
    run_raw(raw_connection(connection), "BEGIN")
    connection.begin()


def _waiting(connection: Connection, statement: Callable[[Connection], T]) -> T:
    set_busy_timeout(connection, SQLITE_BUSY_TIMEOUT_MS)
    try:
        return statement(connection)
    finally:
        set_busy_timeout(connection, 0)
