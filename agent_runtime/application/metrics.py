"""What the use cases report for monitoring, as a port: infrastructure decides where it goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# The model label of a turn's usage when the server is not configured with its model.
OTHER_MODEL = "other"


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
        """A turn ended and its tokens were counted (committed): once per turn, if it used
        any; `model` is one of the server's models, or OTHER_MODEL (UsageModelLabels)."""
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


@dataclass(frozen=True, slots=True)
class UsageModelLabels:
    """The model a turn's usage is reported under: one the server is configured with (the
    default model, an agent's), else OTHER_MODEL. A request may name any model, and every
    label value would be a series kept for the life of the process."""

    configured: frozenset[str]

    @classmethod
    def of(cls, default_model: str, agent_models: Iterable[str]) -> UsageModelLabels:
        return cls(frozenset(m for m in (default_model, *agent_models) if m))

    def label(self, model: str) -> str:
        return model if model in self.configured else OTHER_MODEL
