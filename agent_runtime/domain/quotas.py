"""A tenant's quotas, and the decision whether one more turn may start.

Checked when a turn is about to start, never while it runs: a running turn is never cut off,
so the token quota may be passed by what the turns running at that moment still use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agent_runtime.domain.errors import QuotaExceeded, QuotaViolation
from agent_runtime.domain.usage import next_day_start

REQUEST_WINDOW = timedelta(minutes=1)
# A turn slot frees when some running turn ends: no window to wait for, so a short pause.
CONCURRENCY_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """Limits for one tenant; None: no limit."""

    tokens_per_day: int | None = None  # prompt + completion tokens of the turns ended per UTC day
    concurrent_turns: int | None = None  # turns running at once, across every replica
    requests_per_minute: int | None = None  # turns started in any 60 s

    @property
    def limits_anything(self) -> bool:
        return any(
            limit is not None
            for limit in (self.tokens_per_day, self.concurrent_turns, self.requests_per_minute)
        )


def too_many_running(tenant_id: str, limit: int, running: int) -> QuotaExceeded | None:
    if running < limit:
        return None
    return _exceeded(
        tenant_id,
        "concurrent_turns",
        limit,
        f"{running} turns running, the limit is {limit}",
        reason="CONCURRENT_TURNS_QUOTA_EXCEEDED",
        retry_after=CONCURRENCY_RETRY_SECONDS,
    )


def too_many_requests(
    tenant_id: str, limit: int, started: int, oldest: datetime | None, now: datetime
) -> QuotaExceeded | None:
    """`started`: the turns started in the minute before `now`, `oldest` the first of them."""
    if started < limit:
        return None
    frees_at = (oldest or now) + REQUEST_WINDOW
    return _exceeded(
        tenant_id,
        "requests_per_minute",
        limit,
        f"{started} turns started in the last minute, the limit is {limit}",
        reason="REQUEST_RATE_QUOTA_EXCEEDED",
        retry_after=max((frees_at - now).total_seconds(), 0.0),
    )


def too_many_tokens(
    tenant_id: str, limit: int, used_today: int, now: datetime
) -> QuotaExceeded | None:
    if used_today < limit:
        return None
    return _exceeded(
        tenant_id,
        "tokens_per_day",
        limit,
        f"{used_today} tokens used today (UTC), the limit is {limit}",
        reason="TOKEN_QUOTA_EXCEEDED",
        retry_after=(next_day_start(now) - now).total_seconds(),
    )


def _exceeded(
    tenant_id: str, quota: str, limit: int, what: str, *, reason: str, retry_after: float
) -> QuotaExceeded:
    return QuotaExceeded(
        f"tenant {tenant_id} is over its {quota} quota: {what}",
        reason=reason,
        violation=QuotaViolation(f"tenant:{tenant_id}", f"{quota}: {what}"),
        retry_after=retry_after,
        metadata={"tenant_id": tenant_id, "quota": quota, "limit": str(limit)},
    )
