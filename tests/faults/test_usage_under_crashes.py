"""Usage is counted once per turn, in the commit that ends it: a server killed with -9 while
a turn runs counts nothing for that turn (its recovery neither), and what was counted before
stays counted once, through retries sent to the restarted server. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us
from tests.support.databases import BACKENDS, query
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.migrated_databases import migrated_database_for
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with migrated_database_for(request.param, str(tmp_path / "runtime.db")) as url:
        yield url


async def test_a_turn_killed_mid_answer_is_never_counted_and_the_rest_once(
    database: str,
) -> None:
    async with FakeModelServer() as model:
        env = {"AGENT_RUNTIME_LLM_BASE_URL": model.base_url, "AGENT_RUNTIME_INSTANCE_ID": "a"}
        server = ServerProcess(database, env=env)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                client = connect(channel)
                model.enqueue(text_answer("counted", usage=(100, 10)))
                counted = user_message("s1", "first", client_message_id="key-1")
                first = await client.turn(counted)

                asked = asyncio.Event()

                async def hold(_body: dict[str, Any]) -> None:
                    asked.set()
                    await asyncio.Event().wait()  # until the server is killed

                model.on_request = hold
                doomed = client.runtime.StreamMessage(user_message("s1", "second"))
                started = await doomed.read()
                await asyncio.wait_for(asked.wait(), 10)
                await server.kill_hard()
            model.on_request = None

            # The same instance id: it interrupts its earlier life's turn as it starts.
            server = ServerProcess(database, env=env)
            await server.start()
            async with grpc.aio.insecure_channel(server.address) as channel:
                client = connect(channel)
                killed = await client.sessions.GetTurn(
                    ses.GetTurnRequest(session_id="s1", turn_id=started.turn_id)
                )
                assert killed.turn.state == ses.TURN_STATE_INTERRUPTED
                # The retry of the counted turn replays it: no model call, nothing counted.
                assert (await client.turn(counted))[-1] == first[-1]
                model.enqueue(text_answer("after", usage=(1, 2)))
                await client.turn(user_message("s1", "third"))

                session = (
                    await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
                ).session
                usage = (await client.usage.GetUsage(us.GetUsageRequest())).total
        finally:
            await server.kill_hard()

    assert (session.usage.prompt_tokens, session.usage.completion_tokens) == (101, 12)
    assert session.usage.turns == 2
    assert (usage.prompt_tokens, usage.completion_tokens, usage.turns) == (101, 12, 2)
    assert len(model.requests) == 3
    # The daily count the token quota reads agrees.
    assert await query(
        database, "SELECT prompt_tokens, completion_tokens, turns FROM tenant_usage_days"
    ) == [(101, 12, 2)]
