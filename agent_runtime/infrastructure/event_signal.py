"""LocalEventSignal: in-process wake-up for event watchers after a commit with events.

Other processes' commits are not seen here; watchers also poll, so they are found within the
poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib


class LocalEventSignal:
    def __init__(self) -> None:
        self._generation = 0
        self._changed = asyncio.Event()

    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        self._generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, after_generation: int, max_wait: float) -> None:
        if self._generation != after_generation:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                await self._changed.wait()
