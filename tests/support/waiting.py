"""Waiting for a condition another task or process brings about (never a fixed sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# A waiter's polling interval that no test outlasts: only a wake-up ends its wait.
FOREVER = 3600.0


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_seconds: float = 10.0, what: str = "condition"
) -> None:
    try:
        async with asyncio.timeout(within_seconds):
            # Polling: the condition lives in another process or service that offers no event.
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {within_seconds}s waiting for {what}") from None
