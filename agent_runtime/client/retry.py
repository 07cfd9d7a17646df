"""When a failed call may be sent again, and after how long."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from agent_runtime.client.errors import AgentRuntimeError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of calls that are safe to repeat: reads, and turns carrying a client_message_id.

    Only a status that says the request did not take effect and may succeed later is retried:
    UNAVAILABLE always; RESOURCE_EXHAUSTED and ABORTED only when the server attached RetryInfo
    (e.g. SESSION_BUSY, TOO_MANY_STREAMS), after at least the delay it asks for, unless that
    delay is longer than max_backoff (a tenant's token quota until midnight): the caller gets
    the error, with its retry_delay, at once.
    """

    # Attempts in all, the first included, without progress in between; 1 disables retries.
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")

    def delay_before_retry(self, attempt: int, error: AgentRuntimeError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`; None: do not retry."""
        if attempt >= self.max_attempts or not is_retryable(error):
            return None
        if error.retry_delay is not None and error.retry_delay > self.max_backoff:
            return None
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        jittered = backoff * random.uniform(0.8, 1.0)  # spread a crowd of clients apart
        return max(jittered, error.retry_delay or 0.0)


NO_RETRIES = RetryPolicy(max_attempts=1)


def is_retryable(error: AgentRuntimeError) -> bool:
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.retry_delay is not None and error.code in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    )
