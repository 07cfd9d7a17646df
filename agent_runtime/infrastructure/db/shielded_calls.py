"""ShieldedCalls: calls a cancelled caller cannot cut short, and the one in flight.

A call that must run to its end once started (a COMMIT: cut short, its outcome would be
unknown) is awaited shielded: a cancelled caller stops waiting, but the call goes on, and
settle() waits for it before anything touches the connection again. What is to happen only
if it succeeds (waking the waiters of a commit) is attached to the call itself, so it
happens whether or not its caller is still there to see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ShieldedCalls:
    def __init__(self) -> None:
        self._in_flight: asyncio.Future[Any] | None = None

    async def see_through(
        self, call: Awaitable[T], *, on_success: Callable[[], None] | None = None
    ) -> T:
        """The outcome of `call`, run to its end even if the caller is cancelled meanwhile;
        `on_success` is called (on the event loop) as soon as it succeeds, and only then."""
        future = asyncio.ensure_future(call)
        if on_success is not None:
            when_succeeded(future, on_success)
        self._in_flight = future
        return await asyncio.shield(future)

    @property
    def idle(self) -> bool:
        """No call is running."""
        return self._in_flight is None or self._in_flight.done()

    async def settle(self) -> None:
        """Waits for the call in flight, if any; its outcome was its caller's to see."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            if not in_flight.done():
                await asyncio.wait([in_flight])
            if not in_flight.cancelled():
                in_flight.exception()  # retrieved: its caller was cancelled or has seen it


def when_succeeded(future: asyncio.Future[Any], callback: Callable[[], None]) -> None:
    """Calls `callback` (on the event loop) once `future` succeeds, whoever awaits it; never
    if it fails or is cancelled."""

    def if_succeeded(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            callback()

    future.add_done_callback(if_succeeded)
