"""The A/B report: floor-normalised medians, per run rows."""

import pytest

from benchmarks.ab import burst_cpu, report


def test_the_verdict_divides_each_run_by_its_own_floor() -> None:
    # The new version's raw CPU is higher, but its floor ran on a slower machine: normalised,
    # it costs the same as the base.
    rows = [("base", 2.0, 1.0), ("new", 3.0, 1.5), ("base", 2.2, 1.1), ("new", 2.4, 1.2)]
    table, ratio = report("aaa", "bbb", 32, rows)
    assert ratio == pytest.approx(1.0)
    assert "| 2 | bbb | 3.00 ms | 1.50 ms | 2.00x |" in table
    assert "raw CPU per turn: 1.29x" in table


def test_the_figures_come_from_the_burst_level_asked_for() -> None:
    results = {
        "throughput": {
            "1": {
                "runtime": {"server_cpu_ms_per_turn": 9.0},
                "floor": {"server_cpu_ms_per_turn": 9.0},
            },
            "32": {
                "runtime": {"server_cpu_ms_per_turn": 3.5},
                "floor": {"server_cpu_ms_per_turn": 1.5},
            },
        }
    }
    assert burst_cpu(results, 32) == (3.5, 1.5)
