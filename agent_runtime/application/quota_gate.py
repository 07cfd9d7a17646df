"""QuotaGate: whether a tenant may start one more turn, checked before the turn starts.

The counts come from the database, read while the tenant's admissions are held (one at a
time per tenant, across replicas, until COMMIT #1): the turns running, the turns started in
the last minute and the tokens counted today. So the concurrency and request-rate quotas
hold exactly. The token quota is checked only here, never against a running turn: the
turns already running when it is reached may pass it by what they still use.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent_runtime.application.ids import Clock
from agent_runtime.application.store_ports import UnitOfWork
from agent_runtime.domain.quotas import (
    REQUEST_WINDOW,
    TenantQuota,
    too_many_requests,
    too_many_running,
    too_many_tokens,
)
from agent_runtime.domain.usage import usage_day


class QuotaGate:
    def __init__(self, quotas: Mapping[str, TenantQuota], clock: Clock) -> None:
        self._quotas = {tenant: q for tenant, q in quotas.items() if q.limits_anything}
        self._now = clock

    async def hold(self, uow: UnitOfWork, tenant_id: str) -> None:
        """Before anything is read for a new turn: the tenant's admissions wait for each
        other from here to their commit (only tenants with quotas pay for it)."""
        quota = self._quotas.get(tenant_id)
        if quota is not None and (quota.concurrent_turns or quota.requests_per_minute):
            await uow.usage.lock_admissions()

    async def admit(self, uow: UnitOfWork, tenant_id: str) -> None:
        """Raises QuotaExceeded (RESOURCE_EXHAUSTED) if the tenant is past a quota: the one
        with the longest wait first."""
        quota = self._quotas.get(tenant_id)
        if quota is None:
            return
        now = self._now()
        if quota.tokens_per_day is not None:
            used = await uow.usage.tokens_on(usage_day(now))
            if refusal := too_many_tokens(tenant_id, quota.tokens_per_day, used, now):
                raise refusal
        if quota.requests_per_minute is not None:
            started, oldest = await uow.usage.turns_started_since(now - REQUEST_WINDOW)
            limit = quota.requests_per_minute
            if refusal := too_many_requests(tenant_id, limit, started, oldest, now):
                raise refusal
        if quota.concurrent_turns is not None:
            running = await uow.usage.running_turns()
            if refusal := too_many_running(tenant_id, quota.concurrent_turns, running):
                raise refusal
