"""Counting the approvals that wait for a human, for the pending-approvals gauge.

Counted from the database, not kept in memory: it is then right across restarts and for
every process sharing the database.
"""

from __future__ import annotations

from agent_runtime.application.ids import Clock, utc_now
from agent_runtime.application.metrics import RuntimeMetrics
from agent_runtime.application.store_ports import UnitOfWorkFactory


class PendingApprovalsGauge:
    def __init__(
        self, uow_factory: UnitOfWorkFactory, metrics: RuntimeMetrics, clock: Clock = utc_now
    ) -> None:
        self._uow_factory = uow_factory
        self._metrics = metrics
        self._now = clock

    async def sample(self) -> int:
        count = await self._uow_factory.count_pending_approvals(self._now())
        self._metrics.pending_approvals(count)
        return count
