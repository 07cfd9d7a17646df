"""What the use cases report for monitoring, as a port: infrastructure decides where it goes."""

from __future__ import annotations

from typing import Protocol


class RuntimeMetrics(Protocol):
    def turn_finished(self, outcome: str, seconds: float) -> None:
        """A turn run by this process ended; outcome is its stop reason (e.g. END_TURN)."""
        ...

    def model_first_token(self, seconds: float) -> None:
        """A model call produced its first output this long after it was sent."""
        ...

    def model_call_finished(self, outcome: str, seconds: float) -> None:
        """A model call ended: outcome is ok, error or cancelled."""
        ...

    def tokens_used(self, prompt: int, completion: int) -> None: ...

    def usage_counted(self, tenant_id: str, model: str, prompt: int, completion: int) -> None:
        """A turn ended and its tokens were counted (committed): once per turn."""
        ...

    def pending_approvals(self, count: int) -> None:
        """Approvals waiting for a human's decision now, in the whole database."""
        ...


class NoMetrics:
    """Reports nothing: the default when metrics are off, and for tests."""

    def turn_finished(self, outcome: str, seconds: float) -> None:
        pass

    def model_first_token(self, seconds: float) -> None:
        pass

    def model_call_finished(self, outcome: str, seconds: float) -> None:
        pass

    def tokens_used(self, prompt: int, completion: int) -> None:
        pass

    def usage_counted(self, tenant_id: str, model: str, prompt: int, completion: int) -> None:
        pass

    def pending_approvals(self, count: int) -> None:
        pass
