"""The attempts of one call: the time budget they share, and whether a failure is retried.

Both clients drive their calls with it; only how they wait and call differs (await or block).
"""

from __future__ import annotations

import time

import grpc

from agent_runtime.client.errors import AgentRuntimeError
from agent_runtime.client.retry import RetryPolicy


class Attempts:
    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        """`timeout`: seconds for every attempt and the waits between them (None: no limit)."""
        self._policy = policy
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._attempt = 1

    def remaining(self) -> float | None:
        """The deadline of the next attempt, in seconds from now (None: no limit)."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def progressed(self) -> None:
        """The call got somewhere (a stream item arrived): a later failure starts a fresh
        series of attempts."""
        self._attempt = 1

    def delay_after(self, failure: grpc.RpcError, *, repeatable: bool = True) -> float:
        """Seconds to wait before the next attempt. Raises the failure as an AgentRuntimeError
        instead when there is none: the call is not `repeatable`, the status says a repeat
        would not help, or the attempts or the time budget are used up."""
        error = AgentRuntimeError.from_rpc_error(failure)
        delay = self._policy.delay_before_retry(self._attempt, error) if repeatable else None
        remaining = self.remaining()
        if delay is None or (remaining is not None and delay >= remaining):
            raise error from None
        self._attempt += 1
        return delay
