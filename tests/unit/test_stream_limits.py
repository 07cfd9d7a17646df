"""StreamLimits' counting (tests/faults/test_limits.py drives it through a real server)."""

from __future__ import annotations

import pytest

from agent_runtime.api.stream_limits import StreamLimits
from agent_runtime.config import ConfigError, Settings
from agent_runtime.domain.errors import Overloaded, QuotaViolation


def refusal(limits: StreamLimits, tenant_id: str) -> Overloaded:
    with pytest.raises(Overloaded) as caught:
        limits.acquire(tenant_id)
    return caught.value


def test_a_slot_given_back_twice_counts_once() -> None:
    limits = StreamLimits(2)
    slot = limits.acquire("a")
    slot.release()
    slot.release()  # the servicer's finally, then the call's done callback
    assert limits.open_streams() == 0
    held = [limits.acquire("a"), limits.acquire("b")]
    assert (limits.open_streams(), limits.open_streams("a")) == (2, 1)
    assert refusal(limits, "c").reason == "TOO_MANY_STREAMS"
    for slot in held:
        slot.release()
    assert limits.open_streams() == 0


def test_the_per_tenant_limit_leaves_the_rest_to_the_other_tenants() -> None:
    limits = StreamLimits(3, per_tenant=2)
    limits.acquire("a")
    limits.acquire("a")
    error = refusal(limits, "a")
    assert (error.reason, error.retryable, error.metadata) == (
        "TOO_MANY_TENANT_STREAMS",
        True,
        {"limit": "2", "tenant_id": "a"},
    )
    assert error.quota_violations == (
        QuotaViolation("tenant:a", "at most 2 concurrent streams per tenant"),
    )
    limits.acquire("b")
    # The process is full: that is what a tenant under its own limit hears.
    assert refusal(limits, "c").quota_violations == (
        QuotaViolation("server", "at most 3 concurrent streams"),
    )
    assert refusal(limits, "a").reason == "TOO_MANY_STREAMS"


def test_no_count_is_kept_for_a_tenant_with_no_stream_open() -> None:
    limits = StreamLimits(10, per_tenant=1)
    for tenant in ("a", "b", "c"):
        limits.acquire(tenant).release()
    assert limits.open_streams("a") == 0
    assert limits.tenants_with_open_streams() == 0  # tenants that left leave nothing


def test_the_per_tenant_limit_is_a_setting() -> None:
    assert Settings.from_env({}).server.max_streams_per_tenant is None
    env = {"AGENT_RUNTIME_MAX_STREAMS_PER_TENANT": "50"}
    assert Settings.from_env(env).server.max_streams_per_tenant == 50
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_MAX_STREAMS_PER_TENANT"):
        Settings.from_env({"AGENT_RUNTIME_MAX_STREAMS_PER_TENANT": "0"})
