"""Prometheus metrics, scraped over HTTP from a real runtime after real RPCs and turns."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime import bootstrap
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.e2e.test_cli import run_cli
from tests.support.fake_model_server import (
    FakeModelServer,
    stall_after,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import Client, connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

STREAM_MESSAGE = "/agent_runtime.v1.AgentRuntimeService/StreamMessage"
GET_SESSION = "/agent_runtime.v1.SessionService/GetSession"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "observability": {"metrics_listen": "127.0.0.1:0", "health_check_interval_seconds": 0.05}
    }


class Scraper:
    def __init__(self, http: httpx.AsyncClient, port: int) -> None:
        self._http = http
        self._url = f"http://127.0.0.1:{port}/metrics"

    async def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = await self._http.get(self._url)
        assert response.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    async def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it has not been reported yet."""
        return (await self.samples()).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def metrics(runtime: bootstrap.RunningRuntime) -> AsyncIterator[Scraper]:
    assert runtime.metrics_port
    async with httpx.AsyncClient() as http:
        yield Scraper(http, runtime.metrics_port)


async def test_a_turn_is_counted_with_its_rpc_outcome_tokens_and_timings(
    client: Client, model_server: FakeModelServer, metrics: Scraper
) -> None:
    model_server.enqueue(text_answer("Hello from the model", usage=(11, 4)))
    commits_before = await metrics.value("agent_runtime_db_commit_duration_seconds_count")

    chunks = await client.turn(user_message("s1", "hi"))
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN

    assert await metrics.value("agent_runtime_rpcs_total", method=STREAM_MESSAGE, code="OK") == 1
    assert await metrics.value("agent_runtime_rpc_duration_seconds_count", method=STREAM_MESSAGE)
    assert await metrics.value("agent_runtime_turns_total", outcome="END_TURN") == 1
    assert await metrics.value("agent_runtime_turn_duration_seconds_count", outcome="END_TURN") == 1
    assert await metrics.value("agent_runtime_model_time_to_first_token_seconds_count") == 1
    assert await metrics.value("agent_runtime_model_call_duration_seconds_count", outcome="ok") == 1
    assert await metrics.value("agent_runtime_model_tokens_total", direction="in") == 11
    assert await metrics.value("agent_runtime_model_tokens_total", direction="out") == 4
    # COMMIT #1 and COMMIT #2 at least.
    commits = await metrics.value("agent_runtime_db_commit_duration_seconds_count")
    assert commits >= commits_before + 2
    assert await metrics.value("agent_runtime_active_streams", method=STREAM_MESSAGE) == 0


async def test_failed_rpcs_are_counted_by_their_status_code(
    client: Client, metrics: Scraper
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.sessions.GetSession(ses.GetSessionRequest(session_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await client.turn(rt.StreamMessageRequest(session_id="s1"))  # no input
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert (
        await metrics.value("agent_runtime_rpcs_total", method=GET_SESSION, code="NOT_FOUND") == 1
    )
    assert (
        await metrics.value(
            "agent_runtime_rpcs_total", method=STREAM_MESSAGE, code="INVALID_ARGUMENT"
        )
        == 1
    )
    assert await metrics.value("agent_runtime_rpcs_total", method=STREAM_MESSAGE, code="OK") == 0


async def test_an_open_stream_is_active_and_a_cancelled_one_is_counted_as_cancelled(
    client: Client, model_server: FakeModelServer, metrics: Scraper
) -> None:
    upstream_closed = asyncio.Event()
    model_server.enqueue(stall_after("thinking ", on_disconnect=upstream_closed.set))
    call = client.runtime.StreamMessage(user_message("s1", "long job"))
    await call.read()  # TurnStarted
    await call.read()  # the first delta: the model call is under way

    assert await metrics.value("agent_runtime_active_streams", method=STREAM_MESSAGE) == 1
    call.cancel()
    await asyncio.wait_for(upstream_closed.wait(), 10)

    async def cancelled_counted() -> bool:
        return (
            await metrics.value("agent_runtime_rpcs_total", method=STREAM_MESSAGE, code="CANCELLED")
            == 1
            and await metrics.value("agent_runtime_turns_total", outcome="CANCELLED") == 1
        )

    await eventually(cancelled_counted, what="the cancelled stream and turn to be counted")
    assert await metrics.value("agent_runtime_active_streams", method=STREAM_MESSAGE) == 0
    assert (
        await metrics.value("agent_runtime_model_call_duration_seconds_count", outcome="cancelled")
        == 1
    )


async def test_pending_approvals_are_sampled_from_the_database(
    client: Client, model_server: FakeModelServer, metrics: Scraper
) -> None:
    assert await metrics.value("agent_runtime_pending_approvals") == 0
    model_server.enqueue(tool_call_answer("write_file", {"path": "a.txt", "content": "x"}))
    chunks = await client.turn(user_message("s1", "write it"))
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_AWAITING_APPROVAL

    async def one_pending() -> bool:
        return await metrics.value("agent_runtime_pending_approvals") == 1

    await eventually(one_pending, what="the pending approval in the gauge")
    assert await metrics.value("agent_runtime_turns_total", outcome="AWAITING_APPROVAL") == 1


_METRICS_LINE = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")


async def test_serve_exposes_metrics_and_closes_the_port_on_exit(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "runtime.db", env={"AGENT_RUNTIME_METRICS_LISTEN": "127.0.0.1:0"}
    )
    await server.start()
    try:
        found = _METRICS_LINE.search(server.output())
        assert found, server.output()
        async with grpc.aio.insecure_channel(server.address) as channel:
            await connect(channel).turn(user_message("s1", "hi"))  # the built-in fake model
        async with httpx.AsyncClient() as http:
            scraper = Scraper(http, int(found.group(1)))
            assert await scraper.value("agent_runtime_turns_total", outcome="END_TURN") == 1
            assert await server.terminate() == 0, server.output()
            with pytest.raises(httpx.ConnectError):
                await scraper.samples()
    finally:
        server.kill()


def test_a_metrics_port_in_use_stops_start_up_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve",
            env={
                "AGENT_RUNTIME_METRICS_LISTEN": f"127.0.0.1:{port}",
                "AGENT_RUNTIME_LISTEN": "127.0.0.1:0",
                "AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
            },
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve metrics on '127.0.0.1:{port}'" in result.stderr
    assert "Traceback" not in result.stderr
