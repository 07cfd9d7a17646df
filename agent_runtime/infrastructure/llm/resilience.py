"""How the model client survives a flaky endpoint: retry policy, backoff, timeouts.

Pure decisions, no I/O: the client asks `retry_delay` after a failed attempt and does the
waiting itself (with an injectable sleep, so tests observe delays without waiting).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from agent_runtime.domain.errors import ModelError, ModelTimeout, ModelUnavailable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of a model request that failed before the model produced any output.

    max_attempts counts the first try (1 = never retry). The n-th retry waits
    min(max_delay, base_delay * 2**(n-1)), then +- jitter (a fraction of that delay), unless
    the endpoint said Retry-After: that is waited instead, and if it asks for more than
    max_retry_after seconds the request fails at once (the error stays retryable, so the
    client knows it may send the turn again later).
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.2
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction between 0 and 1, not {self.jitter!r}")


@dataclass(frozen=True, slots=True)
class ModelTimeouts:
    """Seconds. connect: opening the TCP/TLS connection. first_token: from sending the request
    until the model's first output (or the whole answer, when not streamed). idle: the longest
    silence between two stream events once the model has started answering."""

    connect: float = 10.0
    first_token: float = 60.0
    idle: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"timeout {name} must be a finite number > 0, not {value!r}")


DEFAULT_RETRY_POLICY = RetryPolicy()
DEFAULT_TIMEOUTS = ModelTimeouts()


def is_transient(error: ModelError) -> bool:
    """Worth sending the same request again: the endpoint was unreachable, overloaded (429,
    5xx), dropped the connection or was too slow. Never a rejected request (4xx) nor a
    malformed answer: those would fail again the same way."""
    return isinstance(error, ModelUnavailable | ModelTimeout) and error.retryable


def backoff_delay(policy: RetryPolicy, attempt: int, random: Callable[[], float]) -> float:
    """The wait after failed attempt number `attempt` (1-based); random() is in [0, 1)."""
    capped = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return max(0.0, capped * (1.0 + policy.jitter * (2.0 * random() - 1.0)))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date.

    None when absent or unreadable (then the normal backoff applies). A date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # delta-seconds are ASCII digits (isdigit: "²" too)
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryDecision:
    delay: float | None  # None: give up and raise the error
    why: str  # for the log


def retry_delay(
    policy: RetryPolicy,
    error: ModelError,
    attempt: int,
    *,
    random: Callable[[], float],
    now: datetime,
) -> RetryDecision:
    """Whether, and after how long, to try again after `error` ended attempt `attempt`.

    The caller has already checked that the model produced no output in this attempt.
    """
    if not is_transient(error):
        return RetryDecision(None, "not a transient failure")
    if attempt >= policy.max_attempts:
        return RetryDecision(None, f"no attempts left ({policy.max_attempts})")
    retry_after = parse_retry_after(error.metadata.get("retry_after"), now)
    if retry_after is not None:
        if retry_after > policy.max_retry_after:
            return RetryDecision(
                None,
                f"Retry-After {retry_after:g}s exceeds the {policy.max_retry_after:g}s limit",
            )
        return RetryDecision(retry_after, "as Retry-After asks")
    return RetryDecision(backoff_delay(policy, attempt, random), "exponential backoff")
