"""SQLite: one connection for every writing unit of work of the process, one thread hop per
transaction.

Units of work that only read (uow_factory.reader) do not come here: they read beside the
writer on read-only connections of their own (sqlite_readers.py), never take the gate and
never wait for a commit. In WAL mode they do not block the writer either.

SQLite has one writer at a time, so our units of work already take turns (the gate). A
statement on a local file whose pages are cached takes microseconds, less than handing it
to a thread and back: through AsyncSession + aiosqlite each statement cost about 175 µs of
CPU, most of it the hop and the greenlet bridge (docs/benchmarks/README.md). So here the
statements run inline on the event loop's thread, on a plain synchronous connection (the
repositories' prebuilt ones straight on its sqlite3 connection: prepared_statements.py),
and only what can wait runs on the writer's own thread:

- COMMIT, which waits for fsync (WAL, synchronous=FULL): a commit is durable when it returns;
- BEGIN IMMEDIATE, but only when the write lock is taken by another process. It is first
  tried inline with the busy timeout set to 0, which fails at once instead of waiting; in
  one process (the usual case, our units of work take turns) it succeeds, saving a hop of
  about 0.2 ms per transaction. On SQLITE_BUSY it is retried on the thread, waiting up to
  the busy timeout. Opening the connection (its PRAGMAs may wait too) also runs there.

Inside a transaction that began IMMEDIATE nothing else waits for a lock in WAL mode. A
ROLLBACK does not fsync either, so it runs inline too, where no cancellation can cut it.
Durability is the same as before: the caller resumes after COMMIT has returned.

When others are queued at the gate, a commit does not COMMIT at once: the queued units of
work join its transaction and one COMMIT follows for all of them (group_commit.py).

The WAL (the -wal file beside the database) is kept bounded here too. SQLite's automatic
checkpoint (after a commit, once the WAL holds 1000 pages) copies pages back into the
database, but it never waits for readers: it copies only what every open snapshot allows,
and the WAL starts over from its beginning only when no reader still uses it. Readers that
always overlap (many WatchEvents pollers and followers, or a reader in another process)
can leave no such moment, and the file then grows with every commit. So limit_wal(), run
periodically (WAL_CHECK_SECONDS, from bootstrap), looks at the file's size and, past
WAL_LIMIT_BYTES, runs `PRAGMA wal_checkpoint(TRUNCATE)`: it copies everything back, waits
for the readers of older snapshots to end (new ones read the database file and do not hold
it up) and truncates the file to nothing. It runs on the writer's thread while holding the
gate, as it may wait: the event loop keeps running, and only writes wait for it (SQLite
lets no one write meanwhile anyway), for the copy and for readers up to
CHECKPOINT_BUSY_TIMEOUT_MS. A checkpoint that gives up is tried again at the next check.
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
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.infrastructure.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_sqlite_writer_engine,
)
from agent_runtime.infrastructure.db.group_commit import BatchLost, CommitBatch, WriterGate
from agent_runtime.infrastructure.db.guarded_session import guard_sync as _guarded
from agent_runtime.infrastructure.db.prepared_statements import PreparedStatements
from agent_runtime.infrastructure.db.run_to_completion import run_to_completion
from agent_runtime.infrastructure.db.sqlite_driver import (
    driver_errors,
    end_transaction,
    is_busy,
    raw_connection,
    run_raw,
    set_busy_timeout,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

_THREAD_NAME = "sqlite-writer"

# Past this size the WAL is checkpointed and truncated: four times the size at which
# SQLite's own checkpoint starts (1000 pages of 4 KiB), so only a WAL that those could not
# start over goes past it.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
# How often the WAL's size is looked at (a stat of the file, on the event loop).
WAL_CHECK_SECONDS = 10.0
# How long a truncating checkpoint waits for readers, while writes wait for it. Our readers
# hold their snapshots for microseconds (sqlite_readers.py); one that holds it longer (a
# reader in another process) makes the checkpoint give up, to be tried again later.
CHECKPOINT_BUSY_TIMEOUT_MS = 250


class SqliteWriter:
    """Owns the connection, the thread that begins and commits on it, and the gate that
    lets one unit of work at a time use it."""

    def __init__(self, url: URL, *, wal_limit_bytes: int = WAL_LIMIT_BYTES) -> None:
        self._engine: Engine = create_sqlite_writer_engine(url)
        self.statements = PreparedStatements(self._engine.dialect)
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
            await self.on_thread(lambda: _commit(connection))
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
        self._statements = writer.statements

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        connection = await self._begin()
        return _guarded(lambda: self._statements.execute(connection, statement, params))

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        connection = await self._begin()
        return _guarded(lambda: self._statements.scalar(connection, statement, params))

    async def scalars(self, statement: Executable, params: Any = None) -> Any:
        connection = await self._begin()
        return _guarded(lambda: self._statements.scalars(connection, statement, params))

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
            _guarded(lambda: _still_open(connection))
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
        await self._writer.on_thread(lambda: _commit(connection))
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


def _commit(connection: Connection) -> None:
    raw = _still_open(connection)
    with driver_errors("COMMIT"):
        raw.commit()


def _still_open(connection: Connection) -> Any:
    """The driver's connection, if its transaction is still open."""
    raw = raw_connection(connection)
    if not raw.in_transaction:
        # SQLite itself rolled the transaction back (after SQLITE_FULL, IOERR...): the
        # driver's commit would do nothing and report success.
        raise StorageUnavailable("the database rolled the transaction back before its commit")
    return raw


def _savepoint(connection: Connection) -> None:
    run_raw(_still_open(connection), "SAVEPOINT unit_of_work")


def _release_savepoint(connection: Connection) -> None:
    run_raw(_still_open(connection), "RELEASE unit_of_work")


def _roll_back_to_savepoint(connection: Connection) -> None:
    raw = raw_connection(connection)
    run_raw(raw, "ROLLBACK TO unit_of_work")
    run_raw(raw, "RELEASE unit_of_work")
