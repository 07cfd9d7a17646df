"""ReadDeadline: a read still waiting at its deadline ends the block; reads that keep
arriving, time between reads and other cancellations are left alone."""

from __future__ import annotations

import asyncio

import pytest

from agent_runtime.infrastructure.llm.read_deadline import ReadDeadline, ReadDeadlineExceeded

SHORT = 0.05


def soon(seconds: float = SHORT) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_read_still_waiting_at_its_deadline_raises() -> None:
    never = asyncio.Event()
    with pytest.raises(ReadDeadlineExceeded):
        async with ReadDeadline() as reads:
            reads.start(soon())
            await never.wait()


async def test_reads_that_keep_arriving_move_the_deadline_on() -> None:
    # 30 reads of 10 ms, each with a deadline 200 ms after it starts: 300 ms in all, longer
    # than one deadline, with a wide margin for a slow machine on each read.
    async with ReadDeadline() as reads:
        for _ in range(30):
            reads.start(soon(0.2))
            await asyncio.sleep(0.01)  # the read: data arrives well before its deadline
            reads.stop()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_time_between_reads_does_not_count() -> None:
    async with ReadDeadline() as reads:
        reads.start(soon())
        reads.stop()
        await asyncio.sleep(SHORT * 3)  # the consumer is slow: not the stream's silence
        reads.start(soon())
        await asyncio.sleep(0)
        reads.stop()


async def test_an_earlier_deadline_than_the_armed_one_is_kept() -> None:
    never = asyncio.Event()
    with pytest.raises(ReadDeadlineExceeded):
        async with asyncio.timeout(SHORT * 20), ReadDeadline() as reads:
            reads.start(soon(60))  # e.g. the first-token deadline
            reads.stop()
            reads.start(soon())  # then the much shorter idle deadline
            await never.wait()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    never = asyncio.Event()
    entered = asyncio.Event()

    async def read_forever() -> None:
        async with ReadDeadline() as reads:
            reads.start(soon(60))
            entered.set()
            await never.wait()

    task = asyncio.create_task(read_forever())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_it_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        ReadDeadline()
