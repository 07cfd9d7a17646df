"""The collector's settings for a server that has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agent_runtime.collector import YOUNG_GENERATION_THRESHOLD, settle_after_start_up


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()  # a server started earlier in this process may have frozen its objects
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_start_up_objects_are_frozen_and_the_young_generation_runs_less_often() -> None:
    older = gc.get_threshold()[1:]
    made_at_start_up = [[index] for index in range(10)]  # lists: objects the collector tracks
    assert gc.get_freeze_count() == 0

    settle_after_start_up()

    assert gc.get_freeze_count() >= len(made_at_start_up)
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)
    assert YOUNG_GENERATION_THRESHOLD > 700  # Python's default: the point of the setting
