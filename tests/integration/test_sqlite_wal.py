"""SQLite's WAL stays bounded on a real file, even when readers always overlap: the writer
truncates it once it passes its limit (sqlite_writer.limit_wal, run periodically)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from agent_runtime.application.periodic import every
from agent_runtime.domain.model import Message, Role, Session
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyReadUnitOfWork
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.integration.conftest import rows_in

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WAL_LIMIT = 256 * 1024
COMMITS = 150  # 8 pages each or so: some 5 MiB of WAL if it is never truncated
# Writers side by side: commits queued at the writer share a transaction (group commit).
WRITERS = 2
READERS_OPEN = 8  # each ends only after the next few began: never a moment without one


async def test_the_wal_stays_bounded_while_readers_always_overlap_and_commits_go_on(
    db_file: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    uows = SqlAlchemyUnitOfWorkFactory(engine, sqlite_wal_limit_bytes=WAL_LIMIT)
    wal = Path(f"{db_file}-wal")
    async with uows(TENANT) as uow:
        await uow.sessions.add(Session("s1", "coder", NOW, NOW))
        await uow.commit()
    writing = True
    readers_begun = 0

    async def overlapping_readers() -> None:
        """Readers that each keep their snapshot until READERS_OPEN more began, as many
        pollers and followers do between them; they never wait for the writer."""
        nonlocal readers_begun
        open_readers: deque[SqlAlchemyReadUnitOfWork] = deque()
        try:
            while writing:
                reader = uows.reader(TENANT)
                await reader.__aenter__()
                open_readers.append(reader)
                assert await reader.sessions.get("s1") is not None  # takes its snapshot
                readers_begun += 1
                if len(open_readers) > READERS_OPEN:
                    await open_readers.popleft().__aexit__(None, None, None)
                await asyncio.sleep(0)  # a turn of the event loop: the others run
        finally:
            while open_readers:
                await open_readers.popleft().__aexit__(None, None, None)

    readers = asyncio.create_task(overlapping_readers())
    # The periodic job as bootstrap runs it, here at every turn of the event loop.
    limiting = asyncio.create_task(every(0, uows.limit_wal))
    wal_sizes: list[int] = []

    async def write(first: int) -> None:
        for position in range(first, COMMITS + 1, WRITERS):
            async with uows(TENANT) as uow:
                await uow.messages.add(
                    Message(f"m{position}", "s1", position, Role.USER, "x" * 8000, NOW)
                )
                await uow.commit()
            wal_sizes.append(_size(wal))

    try:
        await asyncio.gather(*(write(first) for first in range(1, WRITERS + 1)))
        writing = False
        await readers
    finally:
        writing = False
        limiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await limiting
        await readers
        await uows.close()
        await engine.dispose()
    assert readers_begun > COMMITS  # they did overlap the commits
    # Every commit is there: the transaction a checkpoint found open (a batch) was committed
    # first, not rolled back.
    assert rows_in(db_file, "SELECT count(*) FROM messages") == [(COMMITS,)]
    # Truncated each time it passed the limit, give or take the commits made meanwhile.
    assert max(wal_sizes) < 2 * WAL_LIMIT, f"the WAL grew to {max(wal_sizes)} bytes"


def _size(path: Path) -> int:
    return os.stat(path).st_size
