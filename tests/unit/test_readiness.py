"""ReadinessMonitor: a probe that hangs is reported not ready after the timeout, is left to
end by itself (never cancelled mid-statement), and never piles up."""

from __future__ import annotations

import asyncio

from agent_runtime.application.readiness import Readiness, ReadinessMonitor
from tests.support.waiting import eventually


class StuckProbe:
    """Hangs until released, as a database call waiting for a lock does."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def check(self) -> Readiness:
        self.calls += 1
        await self.release.wait()
        return Readiness(True)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Readiness] = []

    async def readiness_changed(self, readiness: Readiness) -> None:
        self.seen.append(readiness)


async def test_a_hung_probe_is_not_ready_after_the_timeout_and_is_not_started_twice() -> None:
    probe, listener = StuckProbe(), Recorder()
    monitor = ReadinessMonitor(probe, listener, timeout=0.05)

    first = await monitor.check()
    assert not first.ready and "0.05s" in first.problem
    second = await monitor.check()  # the first probe still runs: no second one starts
    assert not second.ready and probe.calls == 1
    assert len(listener.seen) == 2  # the reason changed, the state did not

    probe.release.set()

    async def ready() -> bool:  # once the abandoned probe has ended, a new one runs
        return (await monitor.check()).ready

    await eventually(ready, what="ready once the database answers")
    assert probe.calls == 2
    assert listener.seen[-1] == Readiness(True)


async def test_only_changes_are_reported() -> None:
    probe, listener = StuckProbe(), Recorder()
    probe.release.set()
    monitor = ReadinessMonitor(probe, listener, timeout=1)
    for _ in range(3):
        assert (await monitor.check()).ready
    assert listener.seen == [Readiness(True)]
