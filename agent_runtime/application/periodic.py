"""Background jobs: run at an interval, and bounded in time even when they cannot stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Bounded(Generic[_T]):
    """Calls `job` and gives up waiting after `timeout` seconds (TimeoutError).

    A plain asyncio.timeout is not enough: a cancelled database call goes on waiting for its
    driver (closing the connection waits for the statement in flight), so the caller would
    still hang, and a connection cut off mid-statement may never close. Here the job runs as
    a task of its own that is never cancelled: the caller stops waiting, the job ends by
    itself (the driver's own timeouts bound it), and no second run starts meanwhile.
    """

    def __init__(self, job: Callable[[], Awaitable[_T]], timeout: float) -> None:
        self._job = job
        self._timeout = timeout
        self._running: asyncio.Future[_T] | None = None

    async def __call__(self) -> _T:
        if self._running is not None and not self._running.done():
            raise TimeoutError(f"the previous run has not ended after {self._timeout:g}s")
        self._running = task = asyncio.ensure_future(self._job())
        task.add_done_callback(_consume_result)
        # asyncio.wait never cancels what it waits for, even when the caller is cancelled.
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        if not done:
            raise TimeoutError(f"no answer after {self._timeout:g}s")
        return task.result()

    async def finish(self, grace: float) -> None:
        """Wait up to `grace` seconds for a run still going (before closing what it uses)."""
        if self._running is not None and not self._running.done():
            await asyncio.wait({self._running}, timeout=grace)


def _consume_result(task: asyncio.Future[Any]) -> None:
    # A run nobody waits for any more was reported as a timeout; don't warn about it again.
    if not task.cancelled():
        task.exception()


async def every(seconds: float, *jobs: Callable[[], Awaitable[object]]) -> None:
    """Wait `seconds`, run the jobs one after another, repeat, until cancelled. A job that
    fails is logged and tried again next time; it never stops the others."""
    while True:
        await asyncio.sleep(seconds)
        for job in jobs:
            try:
                await job()
            except Exception as exc:  # TimeoutError from a Bounded job too
                log.warning("periodic job %s failed: %s", _name(job), exc)


def _name(job: object) -> str:
    inner = getattr(job, "_job", job)
    return str(getattr(inner, "__qualname__", inner))
