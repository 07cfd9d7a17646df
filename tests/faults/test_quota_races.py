"""Tenant quotas under races: two `agent-runtime serve` processes on one database (a SQLite
file, then PostgreSQL), N turns sent at once against a limit of K.

The concurrency and request-rate quotas admit exactly K: each admission reads the counts while
the tenant's admissions wait for each other (SQLite's one writer; a PostgreSQL advisory lock
per tenant) until COMMIT #1. The token quota is checked when a turn starts, never while it
runs: a turn running when the day's tokens run out finishes, and the next one is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import BACKENDS, database_for
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import read_rest, rich_error, user_message
from tests.support.runtime_fixtures import Client, connect
from tests.support.server_process import ServerProcess

KEY = "k-quota-test"
AUTH = (("authorization", f"Bearer {KEY}"),)
N = 8
K = 3


@asynccontextmanager
async def replicas(
    backend: str, tmp_path: Path, model: FakeModelServer, quota: str
) -> AsyncIterator[list[Client]]:
    """Two servers on one database for tenant `team` with `quota` ("name=value ...")."""
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}=team\nquota team {quota}\n")
    async with (
        database_for(backend, str(tmp_path / "runtime.db")) as url,
        AsyncExitStack() as stack,
    ):
        servers = [
            ServerProcess(
                url,
                env={
                    "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
                    "AGENT_RUNTIME_API_KEYS_FILE": str(keys),
                    "AGENT_RUNTIME_INSTANCE_ID": f"replica-{i}",
                },
            )
            for i in range(2)
        ]
        for server in servers:  # one after the other: SQLite migrates once
            await server.start()
            stack.push_async_callback(server.kill_hard)
        clients = []
        for server in servers:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            clients.append(connect(channel))
        yield clients


def hold_model(model: FakeModelServer) -> asyncio.Event:
    release = asyncio.Event()

    async def hold(_body: dict[str, Any]) -> None:
        await release.wait()

    model.on_request = hold
    return release


async def first_chunk(
    client: Client, request: rt.StreamMessageRequest
) -> tuple[grpc.aio.UnaryStreamCall[Any, Any], rt.StreamChunk | grpc.aio.AioRpcError]:
    call = client.runtime.StreamMessage(request, metadata=AUTH)
    try:
        chunk = await asyncio.wait_for(call.read(), 30)
    except grpc.aio.AioRpcError as error:
        return call, error
    assert isinstance(chunk, rt.StreamChunk)
    return call, chunk


def quota_failure(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                    failure = error_details_pb2.QuotaFailure()
                    detail.Unpack(failure)
                    return failure
    raise AssertionError("no QuotaFailure in the status details")


def check_refused(
    refused: Sequence[grpc.aio.AioRpcError], reason: str, quota: str, max_delay: float
) -> None:
    for error in refused:
        info = rich_error(error)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info
        assert info.error_info is not None and info.error_info.reason == reason
        assert info.error_info.metadata["quota"] == quota
        assert info.retry_info is not None
        assert 1 <= info.retry_info.retry_delay.seconds <= max_delay
        (violation,) = quota_failure(error).violations
        assert violation.subject == "tenant:team"
        assert violation.description.startswith(f"{quota}: ")


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest.mark.parametrize("backend", BACKENDS)
async def test_n_turns_at_once_against_k_concurrent_turns_admit_exactly_k(
    backend: str, tmp_path: Path, model: FakeModelServer
) -> None:
    release = hold_model(model)
    model.default_response = text_answer("done")
    async with replicas(backend, tmp_path, model, f"concurrent_turns={K}") as clients:
        requests = [user_message(f"s{i}", "work", client_message_id=f"key-{i}") for i in range(N)]
        results = await asyncio.gather(
            *(first_chunk(clients[i % 2], r) for i, r in enumerate(requests))
        )
        admitted = [(i, call) for i, (call, got) in enumerate(results) if not _refused(got)]
        refused = [got for _, got in results if isinstance(got, grpc.aio.AioRpcError)]
        assert len(admitted) == K, [type(got).__name__ for _, got in results]
        check_refused(refused, "CONCURRENT_TURNS_QUOTA_EXCEEDED", "concurrent_turns", 1)

        # A retry of an admitted turn attaches to it, on either replica, quota or not.
        index, _ = admitted[0]
        _, retried = await first_chunk(clients[(index + 1) % 2], requests[index])
        assert isinstance(retried, rt.StreamChunk)
        assert retried.turn_id == results[index][1].turn_id
        # A refused turn left nothing behind: its new session does not exist.
        refused_index = next(i for i, (_, got) in enumerate(results) if _refused(got))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await clients[0].sessions.GetSession(
                ses.GetSessionRequest(session_id=f"s{refused_index}"), metadata=AUTH
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        release.set()
        for _, call in admitted:
            rest = await read_rest(call)
            assert rest[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        # The slots are free again.
        model.on_request = None
        _, again = await first_chunk(clients[1], user_message("s-after", "more"))
        assert isinstance(again, rt.StreamChunk) and again.HasField("turn_started")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_n_turns_at_once_against_k_requests_per_minute_admit_exactly_k(
    backend: str, tmp_path: Path, model: FakeModelServer
) -> None:
    model.default_response = text_answer("quick")
    async with replicas(backend, tmp_path, model, f"requests_per_minute={K}") as clients:
        results = await asyncio.gather(
            *(first_chunk(clients[i % 2], user_message(f"s{i}", "go")) for i in range(N))
        )
        admitted = [call for call, got in results if not _refused(got)]
        refused = [got for _, got in results if isinstance(got, grpc.aio.AioRpcError)]
        assert len(admitted) == K
        check_refused(refused, "REQUEST_RATE_QUOTA_EXCEEDED", "requests_per_minute", 60)
        for call in admitted:
            assert (await read_rest(call))[-1].HasField("turn_completed")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_token_quota_never_cuts_off_a_running_turn_and_refuses_the_next(
    backend: str, tmp_path: Path, model: FakeModelServer
) -> None:
    asked, release = asyncio.Event(), asyncio.Event()

    async def hold_the_first(body: dict[str, Any]) -> None:
        if body["messages"][-1]["content"] == "long task":
            asked.set()
            await release.wait()

    model.on_request = hold_the_first
    # Answers are taken in the order the model answers: the held turn's comes second.
    model.enqueue(
        text_answer("big", usage=(90, 20)), text_answer("finished anyway", usage=(50, 10))
    )
    async with replicas(backend, tmp_path, model, "tokens_per_day=100") as clients:
        long_call, long_started = await first_chunk(clients[0], user_message("s1", "long task"))
        assert isinstance(long_started, rt.StreamChunk)
        await asyncio.wait_for(asked.wait(), 10)
        # Another turn, on the other replica, uses up the day's tokens meanwhile.
        big_call, big = await first_chunk(clients[1], user_message("s2", "big task"))
        assert isinstance(big, rt.StreamChunk)
        # Its usage is committed before TurnCompleted is sent.
        assert (await read_rest(big_call))[-1].HasField("turn_completed")

        _, refused = await first_chunk(clients[1], user_message("s3", "one more"))
        assert isinstance(refused, grpc.aio.AioRpcError)
        check_refused([refused], "TOKEN_QUOTA_EXCEEDED", "tokens_per_day", 24 * 3600)

        release.set()  # the running turn was admitted under the limit: it finishes
        rest = await read_rest(long_call)
        assert rest[-2].assistant_message.content == "finished anyway"
        assert rest[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        s1 = await clients[0].sessions.GetSession(
            ses.GetSessionRequest(session_id="s1"), metadata=AUTH
        )
        assert s1.session.usage.total_tokens == 60  # the documented overshoot: 180 of 100


def _refused(got: object) -> bool:
    return isinstance(got, grpc.aio.AioRpcError)
