"""Token usage read back: totals over a time range, grouped by model, day or session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from agent_runtime.domain.model import UsageTotals


class UsageGroupBy(Enum):
    NONE = "none"
    MODEL = "model"
    DAY = "day"  # the UTC day a turn ended, YYYY-MM-DD
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class UsageGroup:
    key: str  # the model, the day or the session id
    usage: UsageTotals


@dataclass(frozen=True, slots=True)
class UsageReport:
    total: UsageTotals
    groups: list[UsageGroup]


def usage_day(at: datetime) -> str:
    """The UTC day `at` falls on, as YYYY-MM-DD: the key of daily token counts."""
    return at.astimezone(UTC).date().isoformat()


def next_day_start(at: datetime) -> datetime:
    """UTC midnight after `at`: when a daily count starts over."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)
