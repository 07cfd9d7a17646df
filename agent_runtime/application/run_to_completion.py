"""run_to_completion: the one way work that must not be cut short finishes even if its
caller is cancelled (a client that goes away, a deadline, shutdown).

A COMMIT cut short would leave its outcome unknown; a transaction's end or a connection's
return to its pool cut short would leak the connection (on SQLite, holding the write lock);
a turn's ending cut short would leave its session busy. So these run as a task of their
own: a cancelled caller waits for it to end, then raises its CancelledError. The unit of
work runs every commit and its own end so (infrastructure/db/unit_of_work.py, as the
UnitOfWork port promises), the SQLite writer the calls it makes on its thread, and the
TurnHandler a turn's ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


async def run_to_completion(call: Awaitable[T]) -> T:
    """The outcome of `call`, which runs to its end whatever happens to the caller. If the
    caller is cancelled meanwhile (however often), the cancellation is raised once the call
    has ended; the call's own outcome is then the call's business (it reports it itself)."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((task,))
        if not task.cancelled() and (failure := task.exception()) is not None:
            # Its caller is gone: this is the only place it is seen.
            log.error("%r failed after its caller was cancelled", call, exc_info=failure)
        raise
