"""Percentiles and summaries in plain Python (no numpy needed at measurement time)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks.

    NaN for an empty sequence, so a missing figure shows as missing, never as zero.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * (q / 100.0)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99 and max of a sample (NaN where the sample is empty).

    NaN values (a figure one turn could not provide) are left out.
    """
    values = [v for v in values if not math.isnan(v)]
    if not values:
        nan = math.nan
        return {"count": 0, "mean": nan, "p50": nan, "p90": nan, "p99": nan, "max": nan}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": float(ordered[-1]),
    }


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def merge_costs(
    blocks: Iterable[tuple[Mapping[str, float], Mapping[str, object]]],
) -> tuple[dict[str, float], dict[str, float]]:
    """One system's CPU seconds (per process) and the fake model's counters over its blocks:
    the CPU and counts add up; a peak or maximum is the largest of the blocks'."""
    cpu: dict[str, float] = {}
    model_stats: dict[str, float] = {}
    for block_cpu, block_stats in blocks:
        for name, seconds in block_cpu.items():
            cpu[name] = round(cpu.get(name, 0.0) + seconds, 3)
        for name, value in block_stats.items():
            if isinstance(value, int | float):
                before = model_stats.get(name, 0)
                largest = name.startswith(("peak", "max"))
                model_stats[name] = max(before, value) if largest else before + value
    return cpu, model_stats
