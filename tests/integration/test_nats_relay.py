"""The NATS chunk relay against a real NATS server: two connections, as two replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from agent_runtime.application.chunk_relay import RelayedChunks
from agent_runtime.domain.chunks import (
    AssistantDelta,
    AssistantMessage,
    Chunk,
    ChunkBody,
    ReasoningDelta,
    ToolCall,
    ToolCallDelta,
    TurnCompleted,
    TurnStarted,
)
from agent_runtime.domain.model import StopReason, Usage
from agent_runtime.infrastructure import nats_relay
from agent_runtime.infrastructure.nats_relay import NatsChunkRelay, subject_token, turn_subject
from tests.support.nats_server import connected_relay, nats_url
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
async def runner() -> AsyncIterator[NatsChunkRelay]:
    """The replica that runs the turns."""
    async with connected_relay(nats_url()) as relay:
        yield relay


@pytest.fixture
async def follower() -> AsyncIterator[NatsChunkRelay]:
    """Another replica, following them."""
    async with connected_relay(nats_url()) as relay:
        yield relay


async def next_relayed(relayed: RelayedChunks) -> Chunk:
    async with asyncio.timeout(10):
        while (chunk := relayed.take()) is None:
            await relayed.arrival()
    return chunk


def unique(tenant_id: str) -> str:
    """A tenant id no other test shares: the NATS server is shared with the other tests of
    this run (other xdist workers among them) and with other runs, and core NATS delivers
    their chunks on the same subject to our follower."""
    return f"{tenant_id}-{uuid.uuid4().hex}"


def publish(relay: NatsChunkRelay, tenant_id: str, chunk: Chunk) -> None:
    """One chunk as the only chunk of its turn's publisher."""
    relay.publisher(tenant_id, chunk.session_id, chunk.turn_id).publish(chunk)


def turn_chunks(session_id: str, turn_id: str) -> list[Chunk]:
    bodies: list[ChunkBody] = [
        TurnStarted("coder", "msg-1"),
        ReasoningDelta("think ✓"),
        AssistantDelta("Hel"),
        AssistantDelta("lo ✓"),
        AssistantMessage("msg-2", "Hello ✓"),
        ToolCallDelta("call-1", "read_file", '{"path": "a'),
        ToolCall("msg-3", "call-1", "read_file", {"path": "a.py", "n": [1, 2]}, False, ""),
        TurnCompleted(StopReason.END_TURN, Usage(5, 7)),
    ]
    return [Chunk(session_id, turn_id, seq, body) for seq, body in enumerate(bodies, 1)]


async def test_a_followed_turns_chunks_arrive_in_order_and_intact(
    runner: NatsChunkRelay, follower: NatsChunkRelay
) -> None:
    sent = turn_chunks("s1", "turn-1")
    acme = unique("acme")
    async with follower.subscribe(acme, "s1", "turn-1") as relayed:
        assert follower.subscriptions == 1
        publisher = runner.publisher(acme, "s1", "turn-1")
        for chunk in sent:
            publisher.publish(chunk)
        received = [await next_relayed(relayed) for _ in sent]
    assert received == sent
    assert follower.subscriptions == 0


async def test_a_turns_subject_is_worked_out_once_not_per_chunk(
    runner: NatsChunkRelay, follower: NatsChunkRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    subjects: list[str] = []

    def counted(tenant_id: str, turn_id: str) -> str:
        subjects.append(subject := turn_subject(tenant_id, turn_id))
        return subject

    monkeypatch.setattr(nats_relay, "turn_subject", counted)
    sent = turn_chunks("s.1", "turn 1")  # ids that need escaping
    acme = unique("ac.me")
    async with follower.subscribe(acme, "s.1", "turn 1") as relayed:
        subjects.clear()  # the follower's
        publisher = runner.publisher(acme, "s.1", "turn 1")
        for chunk in sent:
            publisher.publish(chunk)
        received = [await next_relayed(relayed) for _ in sent]
    assert received == sent
    assert subjects == [turn_subject(acme, "turn 1")]


async def test_subscribe_returns_once_the_server_has_the_subscription(
    runner: NatsChunkRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk published as soon as subscribe() returns reaches the follower, though the
    server reads the follower's SUB late. Confirming with flush() did not ensure it: nats-py
    writes flush()'s PING ahead of the SUB still in its buffer, the PONG came back first, and
    the server dropped the chunk as nobody's (a flaky test found it on a busy machine)."""
    server = urlsplit(nats_url())
    assert server.hostname and server.port
    async with TcpProxy(server.hostname, server.port) as proxy:
        proxy.delay_requests_from(b"SUB ", 0.2)
        async with connected_relay(f"nats://{proxy.address}") as follower:
            acme = unique("acme")
            async with follower.subscribe(acme, "s1", "turn-1") as relayed:
                publish(runner, acme, Chunk("s1", "turn-1", 1, AssistantDelta("right after")))
                assert (await next_relayed(relayed)).body == AssistantDelta("right after")
    # Confirmed, not given up on after the confirmation's time limit.
    assert not [r for r in caplog.records if "cannot subscribe" in r.getMessage()]


async def test_a_follower_cancelled_while_confirming_leaves_no_subscription(
    runner: NatsChunkRelay, follower: NatsChunkRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[nats_relay.ReceivedChunks] = []
    confirming = asyncio.Event()

    class Recorded(nats_relay.ReceivedChunks):
        def __init__(self, *ids: str) -> None:
            super().__init__(*ids)
            made.append(self)

    async def never_confirmed(_relay: NatsChunkRelay) -> None:
        confirming.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(nats_relay, "ReceivedChunks", Recorded)
    monkeypatch.setattr(NatsChunkRelay, "_confirm_commands_reached_server", never_confirmed)

    async def follow(tenant_id: str) -> None:
        async with follower.subscribe(tenant_id, "s1", "turn-1"):
            pytest.fail("the confirmation was meant never to come")

    acme = unique("acme")
    task = asyncio.create_task(follow(acme))
    await asyncio.wait_for(confirming.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert follower.subscriptions == 0
    monkeypatch.undo()

    # A chunk on the cancelled follower's subject, then one on a subject followed for real:
    # NATS keeps one publisher's order to one subscriber's connection, so by the time the
    # second arrives the first would have, had the cancelled subscription been left behind.
    followed = unique("followed")
    async with follower.subscribe(followed, "s1", "turn-1") as sentinel:
        publish(runner, acme, Chunk("s1", "turn-1", 1, AssistantDelta("nobody's")))
        publish(runner, followed, Chunk("s1", "turn-1", 1, AssistantDelta("after")))
        assert (await next_relayed(sentinel)).body == AssistantDelta("after")
    [cancelled] = made
    assert cancelled.take() is None


async def test_nothing_crosses_tenants_turns_or_sessions(
    runner: NatsChunkRelay, follower: NatsChunkRelay
) -> None:
    acme = unique("acme")
    async with follower.subscribe(acme, "s1", "turn-1") as relayed:
        # Same turn id under another tenant (and one that looks like a wildcard), another
        # turn, another session: all published before the one chunk that is ours, on one
        # connection, so NATS would deliver any of them first.
        publish(runner, "other", Chunk("s1", "turn-1", 1, AssistantDelta("other tenant")))
        publish(runner, "*", Chunk("s1", "turn-1", 1, AssistantDelta("wildcard tenant")))
        publish(runner, acme, Chunk("s1", "turn-2", 1, AssistantDelta("other turn")))
        publish(runner, acme, Chunk("s2", "turn-1", 1, AssistantDelta("other session")))
        publish(runner, acme, Chunk("s1", "turn-1", 1, AssistantDelta("ours")))
        assert (await next_relayed(relayed)).body == AssistantDelta("ours")
        assert relayed.take() is None


async def test_a_turn_nobody_follows_publishes_without_error_before_and_after_close(
    runner: NatsChunkRelay,
) -> None:
    publisher = runner.publisher("acme", "s1", "unfollowed")
    for chunk in turn_chunks("s1", "unfollowed"):
        publisher.publish(chunk)
    await runner.close()  # sends what is queued, then drains
    assert not runner.connected
    # A turn still streaming as the process shuts down: its publishes raise nothing.
    publisher.publish(turn_chunks("s1", "unfollowed")[0])
    publish(runner, "acme", turn_chunks("s1", "after-close")[0])


def test_ids_become_distinct_single_subject_tokens() -> None:
    assert turn_subject("acme", "turn_01H-x") == "agent_runtime.turns.acme.turn_01H-x"
    tokens = {subject_token(v) for v in ("a.b", "a%2Eb", "a*", "a>", "a b", "a", "", "é")}
    assert len(tokens) == 8
    for token in tokens:
        assert token and not {".", "*", ">", " "} & set(token)
    assert turn_subject("a.b", "c") != turn_subject("a", "b.c")
