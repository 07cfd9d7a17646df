"""The NATS chunk relay inside running servers: start-up without NATS, and followers that
always unsubscribe (turn over, client gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.config import ConfigError, DatabaseSettings, ServerSettings, Settings
from agent_runtime.infrastructure.llm.endpoint import ModelEndpoint
from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.databases import postgres_admin_url, scratch_postgres
from tests.support.fake_model_server import FakeModelServer, gated_answer
from tests.support.grpc_helpers import read_rest, user_message
from tests.support.nats_server import nats_url
from tests.support.runtime_fixtures import Client, connect
from tests.support.waiting import eventually


async def test_start_up_fails_naming_the_setting_when_nats_is_unreachable(
    tmp_path: Path,
) -> None:
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0", nats_url="nats://127.0.0.1:1"),  # no NATS
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'runtime.db'}"),
    )
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_NATS_URL") as raised:
        await bootstrap.start(settings)
    assert "127.0.0.1:1" in str(raised.value)
    assert not (tmp_path / "runtime.db").exists()  # stopped before touching the database


async def test_a_failed_start_up_leaves_no_relay_or_database_behind() -> None:
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0", nats_url=nats_url()),
        # Nothing listens there.
        database=DatabaseSettings(url="postgresql+asyncpg://postgres@127.0.0.1:1/test"),
    )
    before = asyncio.all_tasks()
    with pytest.raises(OSError):  # connection refused
        await bootstrap.start(settings)
    # The relay's sender and its connection's reader tasks were stopped with it.
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()


class TwoReplicas:
    def __init__(self) -> None:
        self.runtimes: list[bootstrap.RunningRuntime] = []
        self.clients: list[Client] = []


@pytest.fixture
async def two_replicas(model_server: FakeModelServer) -> AsyncIterator[TwoReplicas]:
    """Two runtimes in this process on one PostgreSQL, relaying over NATS."""
    url = nats_url()
    group = TwoReplicas()
    async with scratch_postgres(postgres_admin_url()) as database, AsyncExitStack() as stack:
        for name in ("replica-a", "replica-b"):
            settings = Settings(
                server=ServerSettings(listen="127.0.0.1:0", nats_url=url),
                database=DatabaseSettings(url=database),
                model=ModelEndpoint(base_url=model_server.base_url),
                turns=TurnSettings(instance_id=name),
            )
            running = await bootstrap.start(settings)
            stack.push_async_callback(running.stop, None)
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
            )
            group.runtimes.append(running)
            group.clients.append(connect(channel))
        yield group


async def test_a_follower_unsubscribes_when_its_client_goes_and_when_the_turn_ends(
    two_replicas: TwoReplicas, model_server: FakeModelServer
) -> None:
    gate = asyncio.Event()
    model_server.enqueue(gated_answer(["one ", "two"], gate))
    runner, follower = two_replicas.clients
    relay = two_replicas.runtimes[1].relay
    assert relay is not None
    call = runner.runtime.StreamMessage(user_message("s1", "hi"))
    started = await call.read()
    assert isinstance(started, rt.StreamChunk)
    resume = rt.ResumeStreamRequest(session_id="s1", turn_id=started.turn_id, after_seq=0)

    cancelled = follower.runtime.ResumeStream(resume)
    assert await cancelled.read() == started
    assert relay.subscriptions == 1
    cancelled.cancel()

    async def unsubscribed() -> bool:
        return relay.subscriptions == 0

    await eventually(unsubscribed, what="the cancelled follower to unsubscribe")

    followed = follower.runtime.ResumeStream(resume)
    assert await followed.read() == started
    gate.set()
    rest = await read_rest(followed)
    assert rest[-1].HasField("turn_completed")
    await eventually(unsubscribed, what="the follower to unsubscribe at the turn's end")
    await read_rest(call)
