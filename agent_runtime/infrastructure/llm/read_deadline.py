"""ReadDeadline: a deadline on the reads of one stream, with one timer for the whole stream.

A model streams a token every few milliseconds, and every token moves the idle deadline
later. Arming a fresh timer around each read (asyncio.timeout) costs a timer-heap push and
a cancellation per token: about 5 % of the event loop at 32 concurrent turns. Here the
timer stays armed; a read only records its deadline. When the timer fires early (the
deadline moved on meanwhile), it re-arms itself at the current deadline, so a stream costs
about one timer per idle period rather than one per token. Time spent between reads (the
consumer's) does not count: a timer that fires then waits for the next read.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class ReadDeadlineExceeded(Exception):
    """A read was still waiting at its deadline."""


class ReadDeadline:
    """`async with ReadDeadline() as deadline:` then, around each read,
    `deadline.start(when)` ... `deadline.stop()`. A read still waiting at `when` (loop time)
    is cancelled, and the block raises ReadDeadlineExceeded."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._when: float | None = None  # the read in progress's deadline; None between reads
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    def start(self, when: float) -> None:
        self._when = when
        timer = self._timer
        if timer is None or timer.when() > when:  # none yet, or too late for this read
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._check)

    def stop(self) -> None:
        self._when = None

    async def __aenter__(self) -> ReadDeadline:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("ReadDeadline must be used inside a task")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._when = None
        if self._expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            # Our cancellation, and nobody else's: it becomes the timeout. Otherwise the
            # task was also cancelled from outside, and that cancellation goes on.
            if self._task.uncancel() == 0:
                raise ReadDeadlineExceeded from exc

    def _check(self) -> None:
        self._timer = None
        when = self._when
        if when is None or self._expired:
            return  # between reads: the next read arms the timer again
        if self._loop.time() < when:
            self._timer = self._loop.call_at(when, self._check)
            return
        self._expired = True
        assert self._task is not None
        self._task.cancel()
