"""SqliteWriter: the process's one SQLite connection for writes, the thread on which it
may wait (for the write lock another process holds, for COMMIT's fsync), the gate that lets
one unit of work at a time use it (WriterSession, sqlite_writer_session.py), group commit
(group_commit.py) and a bound on the WAL's size.

Statements run inline on the event loop's thread: on a local file with cached pages they
take microseconds, less than a hop to a thread and back. docs/architecture.md ("The two
SQLite paths") says why and how; docs/benchmarks/README.md has the measurements.

The WAL: SQLite's automatic checkpoint copies pages back into the database but never waits
for readers, and the WAL starts over only when no reader uses it; readers that always
overlap can leave no such moment. So limit_wal(), run periodically, truncates it past
WAL_LIMIT_BYTES, waiting for older snapshots' readers at most CHECKPOINT_BUSY_TIMEOUT_MS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from agent_runtime.application.run_to_completion import run_to_completion
from agent_runtime.infrastructure.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_sqlite_writer_engine,
)
from agent_runtime.infrastructure.db.group_commit import CommitBatch, WriterGate
from agent_runtime.infrastructure.db.guarded_session import guard_sync as _guarded
from agent_runtime.infrastructure.db.sqlite_driver import (
    commit_open_transaction,
    end_transaction,
    raw_connection,
    run_raw,
    set_busy_timeout,
)
from agent_runtime.infrastructure.db.sqlite_hot_statements import HotStatements
from agent_runtime.infrastructure.db.sqlite_writer_session import WriterSession

T = TypeVar("T")

log = logging.getLogger(__name__)

_THREAD_NAME = "sqlite-writer"

# Past this size the WAL is checkpointed and truncated: four times the size at which
# SQLite's own checkpoint starts (1000 pages of 4 KiB), so only a WAL that those could not
# start over goes past it.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
# How often the WAL's size is looked at (a stat of the file, on the event loop).
WAL_CHECK_SECONDS = 10.0
# How long a truncating checkpoint waits for readers, while writes wait for it. A reader
# that holds its snapshot longer (one in another process) makes the checkpoint give up, to
# be tried again at the next check.
CHECKPOINT_BUSY_TIMEOUT_MS = 250


class SqliteWriter:
    """Owns the connection, the thread that begins and commits on it, and the gate that
    lets one unit of work at a time use it."""

    def __init__(self, url: URL, *, wal_limit_bytes: int = WAL_LIMIT_BYTES) -> None:
        self._engine: Engine = create_sqlite_writer_engine(url)
        self.hot_statements = HotStatements(self._engine.dialect)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)
        self._connection: Connection | None = None
        self.gate = WriterGate()
        # The batch whose transaction is open on the connection, waiting for its COMMIT.
        self.batch: CommitBatch | None = None
        self._flushes: set[asyncio.Task[None]] = set()  # kept referenced while they run
        self._wal_limit_bytes = wal_limit_bytes
        self._wal_path: str | None = None  # known once the connection is open
        # A writer dropped without close() (tests make many) still ends its thread and file.
        self._finalizer = weakref.finalize(self, _shut, self._thread, self._engine)

    def session(self) -> WriterSession:
        return WriterSession(self)

    async def close(self) -> None:
        """Waits for a commit still running and commits an open batch, then closes the
        connection and the thread."""
        async with self.gate:
            if self.batch is not None:
                await self._commit_batch(self.batch)
            await asyncio.get_running_loop().run_in_executor(None, self._finalizer)

    def connection(self) -> Connection:
        if self._connection is None or self._connection.closed:
            self._connection = self._engine.connect()
            self._wal_path = _wal_path(self._connection)
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

    def open_batch(self) -> CommitBatch:
        """Leaves the open transaction open for those queued at the gate, and queues a flush
        behind them that COMMITs it once for all (group_commit.py)."""
        batch = self.batch = CommitBatch()
        flush = asyncio.create_task(self._flush(batch), name="sqlite-group-commit")
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)
        return batch

    def fail_batch(self, batch: CommitBatch, reason: str) -> None:
        """The batch's transaction is lost: its members' commit() raise, and the next unit
        of work begins a transaction of its own."""
        if self.batch is batch:
            self.batch = None
        batch.failed(reason)

    async def _flush(self, batch: CommitBatch) -> None:
        try:
            await self.gate.acquire()
        except asyncio.CancelledError:  # the loop is shutting down
            self.fail_batch(batch, "the writer stopped before the commit")
            raise
        try:
            await self._commit_batch(batch)
        finally:
            self.gate.release()

    async def _commit_batch(self, batch: CommitBatch) -> None:
        """COMMITs the batch's transaction, holding the gate; its members then return, or
        raise what failed it. Runs to its end even if cancelled (then raises after it)."""
        if self.batch is not batch:
            return  # failed already; its members know
        self.batch = None
        connection = self.open_connection()
        if connection is None:
            batch.failed("the writer's connection closed before the commit")
            return
        await run_to_completion(self._land_batch(batch, connection))

    async def _land_batch(self, batch: CommitBatch, connection: Connection) -> None:
        try:
            await self.on_thread(lambda: commit_open_transaction(connection))
        except Exception as exc:
            batch.failed(getattr(exc, "message", None) or f"the commit failed: {exc!r}")
            # If this fails too, the next BEGIN ends it again.
            with contextlib.suppress(Exception):
                _guarded(lambda: end_transaction(connection))
            return
        batch.committed()
        _guarded(connection.commit)  # SQLAlchemy's side: nothing left to commit

    async def on_thread(self, call: Callable[[], T]) -> T:
        """`call` on the writer's thread (it may wait: for fsync, or for a lock), run to its
        end even if the caller is cancelled: nobody may touch the connection meanwhile."""
        loop = asyncio.get_running_loop()
        return await run_to_completion(loop.run_in_executor(self._thread, lambda: _guarded(call)))

    async def limit_wal(self) -> None:
        """Checkpoints and truncates the WAL if it has grown past the limit (see above)."""
        path = self._wal_path
        if path is None or _size(path) <= self._wal_limit_bytes:
            return  # nothing written yet, an in-memory database, or a WAL within bounds
        # A cancelled caller stops waiting only once the writer's thread is done with the
        # connection, since only then is the gate given back.
        await run_to_completion(self._truncate_wal(path))

    async def _truncate_wal(self, path: str) -> None:
        async with self.gate:
            if self.batch is not None:
                # A batch is open (our waiting at the gate may have opened it), its flush
                # queued behind us: COMMIT it now, as the flush would, since a checkpoint
                # cannot run inside a transaction.
                await self._commit_batch(self.batch)
            size = _size(path)
            busy = await self.on_thread(lambda: _checkpoint(self.connection()))
        if busy:
            log.warning(
                "the SQLite WAL %s is %d MiB and could not be truncated: a reader kept an "
                "older snapshot for over %d ms; it is tried again at the next check",
                path,
                size // 2**20,
                CHECKPOINT_BUSY_TIMEOUT_MS,
            )
        else:
            log.info("truncated the SQLite WAL %s (it was %d MiB)", path, size // 2**20)


def _wal_path(connection: Connection) -> str | None:
    """The -wal file of the connection's database, None for one in memory (no file)."""
    databases = run_raw(raw_connection(connection), "PRAGMA database_list").fetchall()
    for _seq, name, file in databases:
        if name == "main":
            return f"{file}-wal" if file else None
    return None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _checkpoint(connection: Connection) -> bool:
    """PRAGMA wal_checkpoint(TRUNCATE), waiting for readers up to CHECKPOINT_BUSY_TIMEOUT_MS.
    True if it gave up (a reader of an older snapshot still uses the WAL)."""
    end_transaction(connection)  # one a failed COMMIT may have left open
    set_busy_timeout(connection, CHECKPOINT_BUSY_TIMEOUT_MS)
    try:
        checkpoint = run_raw(raw_connection(connection), "PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _frames, _copied = checkpoint.fetchone()
    finally:
        set_busy_timeout(connection, SQLITE_BUSY_TIMEOUT_MS)
    return bool(busy)


def _shut(thread: ThreadPoolExecutor, engine: Engine) -> None:
    # A writer collected by the garbage collector runs this on whichever thread collected
    # it, possibly the writer's own thread, which cannot wait for itself to end.
    thread.shutdown(wait=not threading.current_thread().name.startswith(_THREAD_NAME))
    engine.dispose()  # closes the StaticPool's one connection
