"""ThreadCalls: the calls one SQLite unit of work makes on a thread, and the one in flight.

A call that can wait (a COMMIT's fsync, a lock another process holds) runs on a thread so
the event loop keeps going. It is awaited shielded: a cancelled caller stops waiting, but the
call runs to its end, and settle() waits for it before anything touches the connection
again. Its failures come out as domain errors (guard_sync).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from agent_runtime.infrastructure.db.guarded_session import guard_sync

T = TypeVar("T")


class ThreadCalls:
    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor  # None: the event loop's default executor
        self._in_flight: asyncio.Future[Any] | None = None

    async def run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: guard_sync(call))
        self._in_flight = future
        return await asyncio.shield(future)

    @property
    def idle(self) -> bool:
        """No call is running on the thread."""
        return self._in_flight is None or self._in_flight.done()

    async def settle(self) -> None:
        """Waits for the call in flight, if any; its outcome was its caller's to see."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            if not in_flight.done():
                await asyncio.wait([in_flight])
            if not in_flight.cancelled():
                in_flight.exception()  # retrieved: its caller was cancelled or has seen it
