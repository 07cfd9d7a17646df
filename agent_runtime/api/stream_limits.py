"""How many streaming calls (StreamMessage, ResumeStream, WatchEvents) may be open at once:
in the whole process, and per tenant, so that one tenant cannot take every stream.

A call over either limit is refused at once (RESOURCE_EXHAUSTED, with QuotaFailure and
RetryInfo), never queued. A call that got a slot gives it back when it ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_runtime.domain.errors import Overloaded, QuotaViolation

SERVER_SUBJECT = "server"


def tenant_subject(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


class StreamSlot:
    """One open stream's place; release() is idempotent, so every way out may call it."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back

    def release(self) -> None:
        if self._give_back is not None:
            give_back, self._give_back = self._give_back, None
            give_back()


class StreamLimits:
    """Counts open streams. Single-threaded: used from the server's event loop only."""

    def __init__(self, total: int, per_tenant: int | None = None) -> None:
        self.total = total
        # No per-tenant limit set: a tenant may use the whole process's.
        self.per_tenant = total if per_tenant is None else per_tenant
        self._open = 0
        self._open_by_tenant: dict[str, int] = {}

    def open_streams(self, tenant_id: str | None = None) -> int:
        if tenant_id is None:
            return self._open
        return self._open_by_tenant.get(tenant_id, 0)

    def tenants_with_open_streams(self) -> int:
        return len(self._open_by_tenant)

    def acquire(self, tenant_id: str) -> StreamSlot:
        """A slot for one more stream of `tenant_id`; Overloaded past either limit."""
        if self._open >= self.total:
            raise Overloaded(
                f"the server is at its limit of {self.total} concurrent streams; "
                "retry after a short wait",
                reason="TOO_MANY_STREAMS",
                metadata={"limit": str(self.total)},
                quota_violations=[
                    QuotaViolation(SERVER_SUBJECT, f"at most {self.total} concurrent streams")
                ],
            )
        tenant_open = self._open_by_tenant.get(tenant_id, 0)
        if tenant_open >= self.per_tenant:
            raise Overloaded(
                f"tenant {tenant_id} is at its limit of {self.per_tenant} concurrent streams; "
                "retry once one of its streams has ended",
                reason="TOO_MANY_TENANT_STREAMS",
                metadata={"limit": str(self.per_tenant), "tenant_id": tenant_id},
                quota_violations=[
                    QuotaViolation(
                        tenant_subject(tenant_id),
                        f"at most {self.per_tenant} concurrent streams per tenant",
                    )
                ],
            )
        self._open += 1
        self._open_by_tenant[tenant_id] = tenant_open + 1
        return StreamSlot(lambda: self._give_back(tenant_id))

    def _give_back(self, tenant_id: str) -> None:
        self._open -= 1
        remaining = self._open_by_tenant[tenant_id] - 1
        if remaining:
            self._open_by_tenant[tenant_id] = remaining
        else:
            del self._open_by_tenant[tenant_id]  # no entry kept per tenant ever seen

    def hold(self, tenant_id: str, context: Any) -> StreamSlot:
        """A slot for the streaming call `context` serves, given back when the call ends.

        The servicer releases it in its `finally` too, which runs before the status goes out,
        so a client that opens its next stream on seeing the end finds the slot free. The
        done callback is what makes the release certain: it runs however the call ends, also
        when grpc cancels the call while the servicer's generator waits at a `yield`.
        """
        slot = self.acquire(tenant_id)
        context.add_done_callback(lambda _call: slot.release())
        return slot
