"""Following a turn that runs elsewhere: relayed and persisted chunks merged by seq."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.turn_streams import TurnStreams
from agent_runtime.domain.chunks import (
    AssistantDelta,
    AssistantMessage,
    Chunk,
    ChunkBody,
    TurnCompleted,
    TurnStarted,
)
from agent_runtime.domain.model import Session, StopReason, Turn, TurnStatus, Usage
from agent_runtime.domain.tenants import DEFAULT_TENANT
from tests.fakes import FakeChunkRelay, FakeUnitOfWorkFactory

KEY = (DEFAULT_TENANT, "s1", "t1")


def chunk(seq: int, body: ChunkBody) -> Chunk:
    return Chunk("s1", "t1", seq, body)


@pytest.fixture
def uow_factory() -> FakeUnitOfWorkFactory:
    factory = FakeUnitOfWorkFactory()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    factory.db.sessions["s1"] = Session("s1", "coder", now, now, running_turn_id="t1")
    factory.db.turns["t1"] = Turn("t1", "s1", agent="coder", model="m", started_at=now)
    factory.db.chunks["t1"] = [chunk(1, TurnStarted("coder", "m1"))]
    return factory


async def test_each_chunk_once_in_seq_order_with_the_log_filling_what_the_relay_missed(
    uow_factory: FakeUnitOfWorkFactory,
) -> None:
    relay = FakeChunkRelay()
    streams = TurnStreams(uow_factory, LiveTurnRegistry(), relay=relay, poll_seconds=60)
    follow = streams.follow("s1", "t1", 0, tenant_id=DEFAULT_TENANT)
    assert (await anext(follow)).seq == 1  # from the log, read once subscribed
    assert KEY in relay.subscribed
    # Delta 2 went out before the subscription: not available; 3 follows the gap.
    relay.deliver(DEFAULT_TENANT, chunk(3, AssistantDelta("lo")))
    assert await anext(follow) == chunk(3, AssistantDelta("lo"))
    relay.deliver(DEFAULT_TENANT, chunk(3, AssistantDelta("lo")))  # twice: skipped
    relay.deliver(DEFAULT_TENANT, chunk(4, AssistantDelta("!")))
    assert await anext(follow) == chunk(4, AssistantDelta("!"))
    # The final message is committed, but the relay lost it: the gap sends us to the log.
    message = chunk(5, AssistantMessage("m2", "hello!"))
    completed = chunk(6, TurnCompleted(StopReason.END_TURN, Usage(1, 2)))
    uow_factory.db.chunks["t1"] += [message, completed]
    relay.deliver(DEFAULT_TENANT, completed)
    assert [await anext(follow), await anext(follow)] == [message, completed]
    with pytest.raises(StopAsyncIteration):
        await anext(follow)
    assert not relay.subscribed


async def test_a_turn_that_ends_without_a_relayed_completion_ends_the_follower(
    uow_factory: FakeUnitOfWorkFactory,
) -> None:
    relay = FakeChunkRelay()
    streams = TurnStreams(uow_factory, LiveTurnRegistry(), relay=relay, poll_seconds=0.01)
    follow = streams.follow("s1", "t1", 0, tenant_id=DEFAULT_TENANT)
    assert (await anext(follow)).seq == 1
    uow_factory.db.turns["t1"].status = TurnStatus.INTERRUPTED  # its replica died
    with pytest.raises(StopAsyncIteration):
        await anext(follow)
    assert not relay.subscribed


async def test_a_follower_that_goes_away_unsubscribes(
    uow_factory: FakeUnitOfWorkFactory,
) -> None:
    relay = FakeChunkRelay()
    streams = TurnStreams(uow_factory, LiveTurnRegistry(), relay=relay, poll_seconds=60)
    follow = streams.follow("s1", "t1", 0, tenant_id=DEFAULT_TENANT)
    await anext(follow)
    assert KEY in relay.subscribed
    await follow.aclose()
    assert not relay.subscribed


def test_a_turn_running_here_publishes_every_chunk_to_the_relay() -> None:
    relay = FakeChunkRelay()
    live = LiveTurnRegistry(relay=relay).open("s1", "t1", tenant_id="acme")
    sent = [chunk(1, TurnStarted("coder", "m1")), chunk(2, AssistantDelta("hi"))]
    for each in sent:
        live.publish(each)
    assert relay.published == [("acme", each) for each in sent]


async def test_a_finished_turn_is_replayed_from_its_log_without_a_relay_subscription(
    uow_factory: FakeUnitOfWorkFactory,
) -> None:
    completed = chunk(2, TurnCompleted(StopReason.END_TURN, Usage(1, 2)))
    uow_factory.db.chunks["t1"].append(completed)
    uow_factory.db.turns["t1"].status = TurnStatus.COMPLETED
    relay = FakeChunkRelay()
    streams = TurnStreams(uow_factory, LiveTurnRegistry(), relay=relay, poll_seconds=60)
    assert [c async for c in streams.follow("s1", "t1", 1, tenant_id=DEFAULT_TENANT)] == [completed]
    assert relay.subscriptions == 0
