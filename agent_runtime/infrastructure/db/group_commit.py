"""Group commit for the SQLite writer: units of work that queue for the writer share one
transaction and one COMMIT, so one fsync makes all of them durable.

Without it, every unit of work holds the writer's gate through its own COMMIT's fsync, and
those queued behind it wait for that fsync before each pays for its own. With it, a unit of
work that commits while others are queued leaves the transaction open, lets the next one in,
and waits. The next ones run inside that transaction, each in a SAVEPOINT (so one can roll
back its own part without touching the others'). A flush, queued at the gate behind them,
then COMMITs once for all (or the WAL's checkpoint does, if it gets the gate first:
sqlite_writer.limit_wal): each one's commit() returns when that COMMIT has returned, so
"committed" still means on disk, and no unit of work's caller sees it before.

A batch fails whole: when its COMMIT fails, or when SQLite rolls the whole transaction back
by itself (SQLITE_FULL, an I/O error), every member's commit() raises StorageUnavailable
(BatchLost), as each would have without the batch, and so does any later commit() or
statement of that unit of work until it rolls back. A unit of work alone at the gate
commits at once, as before: group commit costs nothing when there is no queue.

Readers (aiosqlite, unit_of_work.py) are on other connections: they see a batch's rows only once it
is committed. A member does see the rows of the members before it, uncommitted, as a
transaction sees its own writes, so its outcome is tied to theirs: one that commits commits
with them, and one that rolls back (say it found the session it was to create already
there) still waits for the batch before it returns, and raises BatchLost if the batch
failed, since what it read then never reached the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent_runtime.domain.errors import StorageUnavailable


class WriterGate:
    """The writer's lock, taken in arrival order, and how many are queued for it."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # first come, first served
        self.waiting = 0

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class BatchLost(StorageUnavailable):
    """The batch a unit of work wrote into, or read from, did not commit: what it wrote is
    not on disk, and what it read may never have been."""


class CommitBatch:
    """The units of work whose writes are in the writer's open transaction, waiting for its
    COMMIT."""

    def __init__(self) -> None:
        self._durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Its members may all have been cancelled, and nobody left to see a failure.
        self._durable.add_done_callback(_retrieve)

    async def wait(self) -> None:
        """Returns once the batch is committed; raises what failed it. A cancelled member
        stops waiting, but its writes stay in the batch (as a cancelled COMMIT still runs)."""
        await asyncio.shield(self._durable)

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Calls `callback` once the batch is committed, whether or not the member it is
        for still waits (a cancelled one's writes commit all the same); never if it fails."""
        when_succeeded(self._durable, callback)

    def committed(self) -> None:
        if not self._durable.done():
            self._durable.set_result(None)

    def failed(self, reason: str) -> None:
        if not self._durable.done():
            self._durable.set_exception(BatchLost(reason))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def when_succeeded(future: asyncio.Future[Any], callback: Callable[[], None]) -> None:
    """Calls `callback` (on the event loop) once `future` succeeds, whoever awaits it; never
    if it fails or is cancelled."""

    def if_succeeded(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            callback()

    future.add_done_callback(if_succeeded)
