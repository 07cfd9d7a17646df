"""LiveTurn: followers see every chunk once, in order, however publishing interleaves."""

from __future__ import annotations

import asyncio

import pytest

from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import OutOfRange
from agent_runtime.domain.tenants import DEFAULT_TENANT


def delta(seq: int) -> chunks.Chunk:
    return chunks.Chunk("s", "t", seq, chunks.AssistantDelta(str(seq)))


async def test_followers_get_everything_whatever_the_interleaving() -> None:
    live = LiveTurnRegistry().open("s", "t", tenant_id=DEFAULT_TENANT)
    received: dict[int, list[int]] = {i: [] for i in range(5)}

    async def follow(i: int, after: int) -> None:
        async for chunk in live.follow(after):
            received[i].append(chunk.seq)
            if chunk.seq % (i + 2) == 0:
                await asyncio.sleep(0)  # a slow consumer: publishing goes on meanwhile

    followers = [asyncio.create_task(follow(i, after=i)) for i in range(5)]
    for seq in range(1, 201):
        live.publish(delta(seq))
        if seq % 7 == 0:
            await asyncio.sleep(0)
    live.finish()
    await asyncio.wait_for(asyncio.gather(*followers), 5)
    for i in range(5):
        assert received[i] == list(range(i + 1, 201))


async def test_a_cursor_in_dropped_deltas_is_out_of_range() -> None:
    # Each delta is its seq as text: 2-3 characters, so 20 characters hold about 8 of them.
    live = LiveTurnRegistry(max_buffered_chars=20).open("s", "t", tenant_id=DEFAULT_TENANT)
    live.publish(chunks.Chunk("s", "t", 1, chunks.TurnStarted("coder", "m")))
    for seq in range(2, 30):
        live.publish(delta(seq))
    live.finish()
    with pytest.raises(OutOfRange):
        async for _ in live.follow(0):
            pass
    kept = [c.seq async for c in live.follow(25)]
    assert kept == [26, 27, 28, 29]


async def test_the_buffer_is_bounded_by_the_deltas_text_not_their_number() -> None:
    live = LiveTurnRegistry(max_buffered_chars=1000).open("s", "t", tenant_id=DEFAULT_TENANT)
    live.publish(chunks.Chunk("s", "t", 1, chunks.TurnStarted("coder", "m")))
    for seq in range(2, 102):  # 100 deltas of 100 characters: ten times the bound
        live.publish(chunks.Chunk("s", "t", seq, chunks.AssistantDelta("x" * 100)))
    live.finish()
    with pytest.raises(OutOfRange) as too_old:
        async for _ in live.follow(0):
            pass
    first = int(too_old.value.metadata["first_available_seq"])
    kept = [c async for c in live.follow(first - 1)]
    text = sum(len(c.body.text) for c in kept if isinstance(c.body, chunks.AssistantDelta))
    assert 500 <= text <= 1000  # dropped down to half the bound, never over it
    assert [c.seq for c in kept] == list(range(first, 102))  # the newest, none missing
