"""A process that dies mid-turn: another process reclaims the turn once its lease expires."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import query
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually


async def test_another_instance_reclaims_a_dead_instances_turn_after_its_lease(
    database_url: str,
) -> None:
    db = database_url
    async with FakeModelServer() as model:
        asked = asyncio.Event()

        async def hang(_body: dict[str, Any]) -> None:
            asked.set()
            await asyncio.Event().wait()

        model.on_request = hang
        env = {"AGENT_RUNTIME_LLM_BASE_URL": model.base_url, "AGENT_RUNTIME_LEASE_SECONDS": "1"}
        dying = ServerProcess(db, env={**env, "AGENT_RUNTIME_INSTANCE_ID": "replica-a"})
        await dying.start()
        async with grpc.aio.insecure_channel(dying.address) as channel:
            call = connect(channel).runtime.StreamMessage(user_message("s1", "keep me"))
            started = await call.read()
            await asyncio.wait_for(asked.wait(), 10)
            await dying.kill_hard()

        model.on_request = None
        survivor = ServerProcess(db, env={**env, "AGENT_RUNTIME_INSTANCE_ID": "replica-b"})
        await survivor.start()
        try:
            async with grpc.aio.insecure_channel(survivor.address) as channel:
                client = connect(channel)

                async def freed() -> bool:
                    got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
                    return not got.session.running_turn_id

                await eventually(freed, within_seconds=15, what="the lease to expire")
                status = await query(
                    db, "SELECT status FROM turns WHERE turn_id = :t", t=started.turn_id
                )
                assert status == [("interrupted",)]
                model.enqueue(text_answer("back"))
                chunks = await client.turn(user_message("s1", "still there?"))
                assert chunks[-2].assistant_message.content == "back"
                page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
                assert [m.content for m in page.messages] == ["keep me", "still there?", "back"]
        finally:
            assert await survivor.terminate() == 0, survivor.output()
