"""LocalEventSignal: in-process wake-up for event watchers and turn followers after a commit
with events, for the waiters whose scope the commit touched.

Other processes' commits are not seen here unless something relays them (on PostgreSQL the
commit listener, commit_notifications.py); waiters also poll, so they are found within the
poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

from agent_runtime.application.ports import EVERYTHING, CommitScope

# How many recent notifications are remembered to answer "did one for my scope come since
# generation N?". A waiter that fell further behind than that is simply woken.
RECENT = 1024

_Waiter = tuple[CommitScope, "asyncio.Future[None]"]


class LocalEventSignal:
    def __init__(self) -> None:
        self._generation = 0
        self._recent: deque[CommitScope] = deque(maxlen=RECENT)  # the last ones, oldest first
        # Waiters are filed by their most specific key, so a commit reaches only the waiters
        # of its session and those of its whole tenant, not every waiter of the process.
        self._of_tenant: dict[str | None, set[_Waiter]] = {}  # scope with no session
        self._of_session: dict[tuple[str, str], set[_Waiter]] = {}

    def generation(self) -> int:
        return self._generation

    def notify(self, scope: CommitScope = EVERYTHING) -> None:
        self._generation += 1
        self._recent.append(scope)
        woken: list[set[_Waiter]] = [self._of_tenant.get(None, set())]
        if scope.tenant_id is None:
            woken += [*self._of_tenant.values(), *self._of_session.values()]
        else:
            woken.append(self._of_tenant.get(scope.tenant_id, set()))
            if scope.session_id is None:
                woken += [w for (t, _s), w in self._of_session.items() if t == scope.tenant_id]
            else:
                woken.append(self._of_session.get((scope.tenant_id, scope.session_id), set()))
        for waiters in woken:
            for interest, waiter in waiters:
                if not waiter.done() and scope.overlaps(interest):
                    waiter.set_result(None)

    async def wait(
        self, after_generation: int, max_wait: float, scope: CommitScope = EVERYTHING
    ) -> None:
        if self._missed(after_generation, scope):
            return
        entry: _Waiter = (scope, asyncio.get_running_loop().create_future())
        if scope.tenant_id is not None and scope.session_id is not None:
            filed = self._of_session.setdefault((scope.tenant_id, scope.session_id), set())
        else:
            filed = self._of_tenant.setdefault(scope.tenant_id, set())
        filed.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max_wait):
                    await entry[1]
        finally:
            filed.discard(entry)
            if not filed:
                self._forget(scope)

    def _missed(self, after_generation: int, scope: CommitScope) -> bool:
        """Whether a notification for `scope` may have come since `after_generation`."""
        since = self._generation - after_generation
        if since <= 0:
            return False
        if since > len(self._recent):
            return True  # older than what is remembered: look again to be sure
        newest = itertools.islice(reversed(self._recent), since)
        return any(scope.overlaps(notified) for notified in newest)

    def _forget(self, scope: CommitScope) -> None:
        if scope.tenant_id is not None and scope.session_id is not None:
            key = (scope.tenant_id, scope.session_id)
            if not self._of_session.get(key, True):
                del self._of_session[key]
        elif not self._of_tenant.get(scope.tenant_id, True):
            del self._of_tenant[scope.tenant_id]
