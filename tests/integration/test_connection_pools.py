"""ShardedConnectionPool against a real HTTP server: light load stays on pool 0's warm
connections, concurrency spreads over pools of bounded size, and every response or failure
gives its slot back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from agent_runtime.infrastructure.llm.connection_pools import ShardedConnectionPool
from agent_runtime.infrastructure.llm.openai_compatible import create_http_client
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


class HeldAnswers:
    """Answers that start streaming at once and end when the test releases them."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self._changed = asyncio.Condition()

    async def respond(self, _request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event("[START]")
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        await self.release.wait()
        await out.send_event("[DONE]")
        await out.end_stream()

    async def wait_started(self, count: int) -> None:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: self.started >= count)


@pytest.fixture
def held(server: FakeModelServer) -> HeldAnswers:
    """Every answer of the server is held until the test releases them."""
    answers = HeldAnswers()
    server.default_response = ScriptedResponse(answers.respond)
    return answers


def post(client: httpx.AsyncClient, server: FakeModelServer) -> httpx.Request:
    return client.build_request("POST", f"{server.base_url}/chat/completions", json={})


async def read_all(client: httpx.AsyncClient, server: FakeModelServer) -> bytes:
    async with client.stream("POST", f"{server.base_url}/chat/completions", json={}) as response:
        return await response.aread()


async def test_requests_one_after_another_reuse_one_connection_of_pool_zero(
    server: FakeModelServer, held: HeldAnswers
) -> None:
    held.release.set()
    pools = ShardedConnectionPool(max_connections=64, keepalive_expiry=30.0, per_pool=4)
    async with httpx.AsyncClient(transport=pools) as client:
        for _ in range(5):
            assert b"[DONE]" in await read_all(client, server)
            assert pools.in_flight == [0] * 16
    assert server.connections_opened == 1


async def test_concurrent_requests_fill_the_pools_in_order_and_give_their_slots_back(
    server: FakeModelServer, held: HeldAnswers
) -> None:
    pools = ShardedConnectionPool(max_connections=6, keepalive_expiry=30.0, per_pool=2)
    async with httpx.AsyncClient(transport=pools) as client:
        calls = [asyncio.create_task(read_all(client, server)) for _ in range(5)]
        await held.wait_started(5)
        assert pools.in_flight == [2, 2, 1]
        held.release.set()
        assert all(b"[DONE]" in body for body in await asyncio.gather(*calls))
        assert pools.in_flight == [0, 0, 0]
    assert server.connections_opened == 5


async def test_when_every_pool_is_full_a_request_waits_for_a_free_connection(
    server: FakeModelServer, held: HeldAnswers
) -> None:
    pools = ShardedConnectionPool(max_connections=2, keepalive_expiry=30.0, per_pool=1)
    async with httpx.AsyncClient(transport=pools) as client:
        calls = [asyncio.create_task(read_all(client, server)) for _ in range(3)]
        await held.wait_started(2)
        assert pools.in_flight == [1, 1]  # the third waits for a connection, in no pool
        assert server.connections_opened == 2  # never more than max_connections
        held.release.set()
        await asyncio.gather(*calls)
        assert held.started == 3
        assert pools.in_flight == [0, 0]


class GatedAnswers:
    """The n-th answer streams at once and ends when the test opens gate n."""

    def __init__(self, count: int) -> None:
        self.gates = [asyncio.Event() for _ in range(count)]
        self.started = [asyncio.Event() for _ in range(count)]
        self._arrived = 0

    async def respond(self, _request: RequestBody, out: ResponseWriter) -> None:
        number, self._arrived = self._arrived, self._arrived + 1
        await out.start_stream()
        await out.send_event("[START]")
        self.started[number].set()
        await self.gates[number].wait()
        await out.send_event("[DONE]")
        await out.end_stream()


async def test_a_waiting_request_takes_the_first_connection_freed_in_any_pool(
    server: FakeModelServer,
) -> None:
    answers = GatedAnswers(3)
    server.default_response = ScriptedResponse(answers.respond)
    pools = ShardedConnectionPool(max_connections=2, keepalive_expiry=30.0, per_pool=1)
    async with httpx.AsyncClient(transport=pools) as client:
        first = asyncio.create_task(read_all(client, server))
        await answers.started[0].wait()
        second = asyncio.create_task(read_all(client, server))
        await answers.started[1].wait()
        third = asyncio.create_task(read_all(client, server))
        answers.gates[1].set()  # pool 1's request ends first: the third goes there
        await second
        async with asyncio.timeout(10):
            await answers.started[2].wait()  # while pool 0's request still streams
        assert not first.done()
        assert pools.in_flight == [1, 1]
        for gate in answers.gates:
            gate.set()
        await asyncio.gather(first, third)
        assert pools.in_flight == [0, 0]


async def test_a_request_that_fails_or_is_closed_early_gives_its_slot_back(
    server: FakeModelServer, held: HeldAnswers
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}/v1/chat/completions"
    pools = ShardedConnectionPool(max_connections=4, keepalive_expiry=30.0, per_pool=4)
    async with httpx.AsyncClient(transport=pools) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(refused, json={})
        assert pools.in_flight == [0]
        response = await client.send(post(client, server), stream=True)
        assert pools.in_flight == [1]
        await response.aclose()  # before reading the body
        await response.aclose()  # closing twice frees the slot once
        assert pools.in_flight == [0]
        held.release.set()


async def test_the_pools_hold_max_connections_in_all_not_a_multiple_of_their_size(
    server: FakeModelServer, held: HeldAnswers
) -> None:
    pools = ShardedConnectionPool(max_connections=5, keepalive_expiry=30.0, per_pool=4)
    async with httpx.AsyncClient(transport=pools) as client:
        calls = [asyncio.create_task(read_all(client, server)) for _ in range(6)]
        await held.wait_started(5)
        assert pools.in_flight == [4, 1]  # pool 0's 4, then the last pool's one connection
        assert server.connections_opened == 5  # never more than max_connections
        held.release.set()
        await asyncio.gather(*calls)
        assert pools.in_flight == [0, 0]


async def test_a_proxy_named_by_the_environment_is_still_used(
    server: FakeModelServer, held: HeldAnswers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake server plays the proxy: a plain-HTTP request through a proxy is sent to it
    # whole ("POST http://host/v1/chat/completions"), and it answers as the model would.
    held.release.set()
    monkeypatch.setenv("HTTP_PROXY", server.base_url.removesuffix("/v1"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = create_http_client(connect_timeout=5.0, read_timeout=10.0)
    async with client:
        body = await client.post("http://model.invalid/v1/chat/completions", json={})
    assert b"[DONE]" in body.content
    assert server.connections_opened == 1


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ShardedConnectionPool(max_connections=0, keepalive_expiry=30.0)
    with pytest.raises(ValueError):
        ShardedConnectionPool(max_connections=10, keepalive_expiry=30.0, per_pool=0)
