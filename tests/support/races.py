"""Many StreamMessage calls racing for one session: exactly one may run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.grpc_helpers import rich_error, user_message
from tests.support.runtime_fixtures import Client


async def race_for_one_session(
    clients: Sequence[Client],
    session_id: str,
    count: int,
    release: asyncio.Event,
    model_asked: asyncio.Event | None = None,
) -> list[rt.StreamChunk]:
    """`count` user messages for `session_id`, spread round-robin over `clients`, while the
    model is held until `release`. Checks that all but one are refused ABORTED / SESSION_BUSY
    naming the running turn, and returns the chunks of the one that ran."""

    async def send(i: int) -> list[rt.StreamChunk] | grpc.aio.AioRpcError:
        try:
            return await clients[i % len(clients)].turn(user_message(session_id, f"racer {i}"))
        except grpc.aio.AioRpcError as error:
            return error

    tasks = [asyncio.create_task(send(i)) for i in range(count)]
    refused: list[grpc.aio.AioRpcError] = []
    for finished in asyncio.as_completed(tasks):
        result = await finished
        assert isinstance(result, grpc.aio.AioRpcError), "a second turn ran"
        refused.append(result)
        if len(refused) == count - 1:
            break
    if model_asked is not None:
        await asyncio.wait_for(model_asked.wait(), 10)
    release.set()
    results = await asyncio.gather(*tasks)
    ran = [r for r in results if isinstance(r, list)]
    assert len(ran) == 1 and ran[0][-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    for error in refused:
        info = rich_error(error)
        assert info.code == grpc.StatusCode.ABORTED
        assert info.error_info is not None and info.error_info.reason == "SESSION_BUSY"
        assert info.error_info.metadata["turn_id"] == ran[0][0].turn_id
    return ran[0]
