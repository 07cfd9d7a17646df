"""ThreadCalls: the calls one SQLite unit of work makes on a thread, and the one in flight.

A call that can wait (a COMMIT's fsync, a lock another process holds) runs on a thread so
the event loop keeps going: on threads its owner keeps for that (the writer's one, the
readers' few), not the event loop's default executor, which DNS lookups share. It is seen
through (shielded_calls.py): a cancelled caller stops waiting, but the call runs to its
end, and settle() waits for it before anything touches the connection again. Its failures
come out as domain errors (guard_sync).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from agent_runtime.infrastructure.db.guarded_session import guard_sync
from agent_runtime.infrastructure.db.shielded_calls import ShieldedCalls

T = TypeVar("T")


class ThreadCalls(ShieldedCalls):
    def __init__(self, executor: Executor) -> None:
        super().__init__()
        self._executor = executor

    async def run(
        self, call: Callable[[], T], *, on_success: Callable[[], None] | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: guard_sync(call))
        return await self.see_through(future, on_success=on_success)
