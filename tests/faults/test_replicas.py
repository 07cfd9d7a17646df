"""Three `agent-runtime serve` processes on one PostgreSQL, requests spread over them.

What holds on one SQLite file must hold here: one running turn per session, idempotent
retries that reach another replica, ResumeStream and WatchEvents served by a replica that
does not run the turn, and a replica's kill -9 cleaned up by the others after its lease (its
turn's followers elsewhere seeing it end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
import pytest

from agent_runtime.client import AgentRuntimeClient, TurnInterrupted
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import postgres_admin_url, query, scratch_postgres
from tests.support.fake_model_server import FakeModelServer, stepped_answer, text_answer
from tests.support.grpc_helpers import kinds, read_rest, user_message
from tests.support.nats_server import nats_url
from tests.support.races import race_for_one_session
from tests.support.runtime_fixtures import Client, connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

REPLICAS = 3
LEASE_SECONDS = 1.5


class Replicas:
    def __init__(
        self, url: str, model: FakeModelServer, count: int, env: dict[str, str] | None = None
    ) -> None:
        common = {
            "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
            "AGENT_RUNTIME_LEASE_SECONDS": str(LEASE_SECONDS),
            "AGENT_RUNTIME_DATABASE_POOL_SIZE": "4",
            **(env or {}),
        }
        self.url = url
        self.servers = [
            ServerProcess(url, env={**common, "AGENT_RUNTIME_INSTANCE_ID": f"replica-{i}"})
            for i in range(count)
        ]
        self.clients: list[Client] = []


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest.fixture
async def replicas(model: FakeModelServer) -> AsyncIterator[Replicas]:
    async with replica_group(model, REPLICAS) as group:
        yield group


@pytest.fixture
async def relayed_replicas(model: FakeModelServer) -> AsyncIterator[Replicas]:
    """Two replicas that relay running turns' chunks to each other over NATS."""
    env = {"AGENT_RUNTIME_NATS_URL": nats_url()}
    async with replica_group(model, 2, env) as group:
        yield group


@asynccontextmanager
async def replica_group(
    model: FakeModelServer, count: int, env: dict[str, str] | None = None
) -> AsyncIterator[Replicas]:
    async with scratch_postgres(postgres_admin_url()) as url, AsyncExitStack() as stack:
        group = Replicas(url, model, count, env)
        # Started together: they migrate one at a time (an advisory lock), none fails.
        await asyncio.gather(*(server.start() for server in group.servers))
        for server in group.servers:
            stack.push_async_callback(_stop, server)
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            group.clients.append(connect(channel))
        yield group


async def _stop(server: ServerProcess) -> None:
    await server.kill_hard()  # and reaped, so no process transport outlives the loop


def hold_model(model: FakeModelServer) -> tuple[asyncio.Event, asyncio.Event]:
    """The model answers only once released; `asked` tells it was asked."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        asked.set()
        await release.wait()

    model.on_request = hold
    return asked, release


async def test_one_running_turn_per_session_across_replicas(
    replicas: Replicas, model: FakeModelServer
) -> None:
    asked, release = hold_model(model)
    model.default_response = text_answer("the one")
    await replicas.clients[0].sessions.CreateSession(ses.CreateSessionRequest(session_id="s1"))

    await race_for_one_session(replicas.clients, "s1", 30, release, model_asked=asked)
    assert len(model.requests) == 1


async def test_a_turn_running_on_one_replica_is_followed_from_the_others(
    replicas: Replicas, model: FakeModelServer
) -> None:
    asked, release = hold_model(model)
    model.enqueue(text_answer("shared answer"))
    first, second, third = replicas.clients
    request = user_message("s1", "once only", client_message_id="key-1")
    watch = third.events.WatchEvents(ev.WatchEventsRequest(session_id="s1", after_event_id=0))

    original = first.runtime.StreamMessage(request)
    started = await original.read()
    assert isinstance(started, rt.StreamChunk) and started.HasField("turn_started")
    await asyncio.wait_for(asked.wait(), 10)

    # The client's retry lands on another replica: it attaches to the running turn.
    retry = second.runtime.StreamMessage(request)
    retried_start = await retry.read()
    assert isinstance(retried_start, rt.StreamChunk)
    assert retried_start.turn_id == started.turn_id
    # A third replica resumes the same turn from the beginning.
    resumed = third.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id, after_seq=0)
    )
    release.set()
    rest = await read_rest(original)
    retried = [retried_start, *await read_rest(retry)]
    followed = [chunk async for chunk in resumed]

    finals = [c for c in [started, *rest] if not c.HasField("assistant_delta")]
    assert kinds(finals) == ["turn_started", "assistant_message", "turn_completed"]
    assert finals[1].assistant_message.content == "shared answer"
    for other in (retried, followed):
        assert [c for c in other if not c.HasField("assistant_delta")] == finals
    assert len(model.requests) == 1

    seen: list[ev.Event] = []
    async for response in watch:
        seen.append(response.event)
        if response.event.type == ev.EVENT_TYPE_TURN_COMPLETED:
            break
    watch.cancel()
    assert seen[0].type == ev.EVENT_TYPE_TURN_STARTED
    assert {e.turn_id for e in seen} == {started.turn_id}
    assert [e.event_id for e in seen] == sorted(e.event_id for e in seen)


async def test_followers_on_another_replica_get_the_deltas_while_the_turn_runs(
    relayed_replicas: Replicas, model: FakeModelServer
) -> None:
    more, finish = asyncio.Event(), asyncio.Event()
    model.enqueue(stepped_answer([["Hel"], ["lo ", "wor"], ["ld"]], [more, finish]))
    runner, other = relayed_replicas.clients
    request = user_message("s1", "greet", client_message_id="key-1")
    original = runner.runtime.StreamMessage(request)
    started = await original.read()
    first_delta = await original.read()
    assert isinstance(started, rt.StreamChunk) and isinstance(first_delta, rt.StreamChunk)
    assert first_delta.assistant_delta.text == "Hel"  # the model is streaming, and held

    # On the other replica: a ResumeStream, and the client's retry that attaches.
    resumed = other.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id, after_seq=0)
    )
    retry = other.runtime.StreamMessage(request)
    followers = (resumed, retry)
    # TurnStarted comes from the persisted log, read after subscribing to the relay.
    heads = [await asyncio.wait_for(call.read(), 10) for call in followers]
    assert heads == [started, started]
    more.set()
    # The model is still held before its last word: only the relay can bring these (as one
    # delta or two: words that arrive together may share one).
    during = [await _deltas_until(call, "lo wor") for call in followers]
    assert len(model.requests) == 1

    finish.set()
    runner_saw = {c.seq: c for c in [started, first_delta, *await read_rest(original)]}
    for head, got, call in zip(heads, during, followers, strict=True):
        chunks = [head, *got, *await read_rest(call)]
        seqs = [c.seq for c in chunks]
        assert seqs == sorted(set(seqs)), "out of order or twice"
        assert all(runner_saw[c.seq] == c for c in chunks)
        assert kinds([c for c in chunks if not c.HasField("assistant_delta")]) == [
            "turn_started",
            "assistant_message",
            "turn_completed",
        ]
        assert chunks[-2].assistant_message.content == "Hello world"
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN


async def _deltas_until(
    call: grpc.aio.UnaryStreamCall[Any, rt.StreamChunk], text: str, *, or_from: str = ""
) -> list[rt.StreamChunk]:
    """The delta chunks `call` sends until their text adds up to `text`, or to `or_from` +
    `text` for a follower that may have subscribed before the delta of `or_from` was
    relayed (deltas are never persisted: one sees those relayed after it subscribed)."""
    got: list[rt.StreamChunk] = []
    longest = len(or_from + text)
    while not (so_far := "".join(c.assistant_delta.text for c in got)).endswith(text):
        if len(so_far) >= longest:
            break
        chunk = await asyncio.wait_for(call.read(), 10)
        assert isinstance(chunk, rt.StreamChunk) and chunk.HasField("assistant_delta")
        got.append(chunk)
    assert so_far in {text, or_from + text}
    return got


async def test_a_killed_replicas_turn_is_interrupted_by_another_after_its_lease(
    replicas: Replicas, model: FakeModelServer
) -> None:
    asked, _release = hold_model(model)
    dying, survivor = replicas.servers[0], replicas.clients[1]
    call = replicas.clients[0].runtime.StreamMessage(user_message("s1", "keep me"))
    started = await call.read()
    assert isinstance(started, rt.StreamChunk)
    await asyncio.wait_for(asked.wait(), 10)
    await dying.kill_hard()

    async def freed() -> bool:
        got = await survivor.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
        return not got.session.running_turn_id

    await eventually(freed, within_seconds=LEASE_SECONDS * 10, what="the lease to expire")
    assert await query(
        replicas.url, "SELECT status, owner FROM turns WHERE turn_id = :t", t=started.turn_id
    ) == [("interrupted", "replica-0")]
    model.on_request = None
    model.enqueue(text_answer("back"))
    chunks = await replicas.clients[2].turn(user_message("s1", "still there?"))
    assert chunks[-2].assistant_message.content == "back"


async def test_a_follower_on_another_replica_sees_a_killed_replicas_turn_end(
    relayed_replicas: Replicas, model: FakeModelServer
) -> None:
    """The follower saw deltas (relayed, never persisted) with seqs past the turn's persisted
    log; when the replica running the turn dies, the end comes after them all the same."""
    more = asyncio.Event()
    model.enqueue(stepped_answer([["Hel"], ["lo ", "wor"]], [more], then_stall=True))
    runner, other = relayed_replicas.clients
    original = runner.runtime.StreamMessage(user_message("s1", "greet", client_message_id="k1"))
    started = await original.read()
    assert isinstance(started, rt.StreamChunk) and started.HasField("turn_started")
    resumed = other.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id, after_seq=0)
    )
    assert await asyncio.wait_for(resumed.read(), 10) == started
    # And a Python client following it there too.
    followed: list[rt.StreamChunk] = []
    following = asyncio.Event()

    async def python_follower() -> None:
        address = relayed_replicas.servers[1].address
        async with AgentRuntimeClient(address) as client:
            async for chunk in client.resume_stream("s1", started.turn_id):
                followed.append(chunk)
                following.set()

    python = asyncio.create_task(python_follower())
    await asyncio.wait_for(following.wait(), 10)
    more.set()
    # Whether "Hel" was relayed before the ResumeStream subscribed is a race: either is fine.
    deltas = await _deltas_until(resumed, "lo wor", or_from="Hel")
    last_seen = deltas[-1].seq

    await relayed_replicas.servers[0].kill_hard()
    ending = await asyncio.wait_for(read_rest(resumed), LEASE_SECONDS * 20)

    assert kinds(ending) == ["error", "turn_completed"]
    assert (ending[0].error.reason, ending[0].error.retryable) == ("TURN_INTERRUPTED", True)
    assert ending[1].turn_completed.stop_reason == rt.STOP_REASON_ERROR
    assert last_seen < ending[0].seq < ending[1].seq
    with pytest.raises(TurnInterrupted):
        await asyncio.wait_for(python, 10)
    assert followed[0] == started
