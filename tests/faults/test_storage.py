"""Fault injection: the disk fills up. A real server process keeps its database on a tiny
tmpfs the test mounts; the test fills that filesystem to the last byte (before a turn, or
while the model is answering), then frees it.

While the disk is full a turn fails with UNAVAILABLE / STORAGE_UNAVAILABLE (a status before
TurnStarted, an Error chunk or status after it), never INTERNAL; the server keeps serving;
nothing is half-written. Once space is back the session is free and the next turn works.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc, session_pb2_grpc
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.checks import all_messages, message_problems, row_counts, turn_statuses
from tests.support.fake_model_server import FakeModelServer, text_answer
from tests.support.grpc_helpers import RichError, rich_error, user_message
from tests.support.server_process import ServerProcess
from tests.support.tiny_disk import fill
from tests.support.waiting import eventually

SESSION = "disk"


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        server.default_response = text_answer("noted")
        yield server


@pytest.fixture
async def server(tiny_disk: Path, model: FakeModelServer) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(
        tiny_disk / "runtime.db",
        env={
            "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
            # Recovery of a turn that could not record its own end runs every lease/3.
            "AGENT_RUNTIME_LEASE_SECONDS": "1.5",
        },
    )
    await process.start()
    try:
        yield process
    finally:
        await process.kill_hard()


@dataclass
class Attempt:
    chunks: list[rt.StreamChunk] = field(default_factory=list)
    error: RichError | None = None


async def attempt(address: str, request: rt.StreamMessageRequest) -> Attempt:
    result = Attempt()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel)
        try:
            async for chunk in stub.StreamMessage(request, timeout=30):
                result.chunks.append(chunk)
        except grpc.aio.AioRpcError as error:
            result.error = rich_error(error)
    return result


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def history(address: str) -> list[ses.Message]:
    async with grpc.aio.insecure_channel(address) as channel:
        return await all_messages(session_pb2_grpc.SessionServiceStub(channel), SESSION)


async def session_free(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await session_pb2_grpc.SessionServiceStub(channel).GetSession(
            ses.GetSessionRequest(session_id=SESSION), timeout=10
        )
    return not reply.session.running_turn_id


def completed_normally(result: Attempt) -> bool:
    last = result.chunks[-1] if result.chunks else None
    return (
        result.error is None
        and last is not None
        and last.turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    )


def storage_failure_problems(result: Attempt) -> list[str]:
    """How a turn that failed for lack of space broke the contract (empty: it did not).

    Before TurnStarted: the RPC fails with UNAVAILABLE, ErrorInfo STORAGE_UNAVAILABLE, and a
    message saying the disk is full. After TurnStarted (DESIGN.md section 3): an Error chunk
    UNAVAILABLE / STORAGE_UNAVAILABLE, then TurnCompleted{ERROR}, and the RPC ends OK.
    """
    kinds = [c.WhichOneof("chunk") for c in result.chunks]
    status = result.error
    if status is not None and status.code == grpc.StatusCode.INTERNAL:
        return [f"INTERNAL: {status.message}"]
    if "turn_started" not in kinds:
        if status is None:
            return [f"no TurnStarted and no error status: {kinds}"]
        problems = []
        if status.code != grpc.StatusCode.UNAVAILABLE:
            problems.append(f"status {status.code.name}, not UNAVAILABLE: {status.message}")
        if status.error_info is None or status.error_info.reason != "STORAGE_UNAVAILABLE":
            problems.append(f"ErrorInfo {status.error_info}, not STORAGE_UNAVAILABLE")
        if "disk is full" not in status.message:
            problems.append(f"the message does not say the disk is full: {status.message!r}")
        return problems
    problems = []
    if status is not None:
        problems.append(
            f"after TurnStarted the RPC failed with {status.code.name} "
            f"({status.error_info.reason if status.error_info else '-'}: {status.message}) "
            f"instead of an Error chunk and TurnCompleted; chunks {kinds}"
        )
    errors = [c.error for c in result.chunks if c.HasField("error")]
    if errors and (errors[0].code, errors[0].reason) != ("UNAVAILABLE", "STORAGE_UNAVAILABLE"):
        problems.append(f"Error chunk {errors[0].code}/{errors[0].reason}: {errors[0].message}")
    if status is None and (
        not errors or result.chunks[-1].turn_completed.stop_reason != rt.STOP_REASON_ERROR
    ):
        problems.append(f"no Error chunk then TurnCompleted{{ERROR}}: {kinds}")
    return problems


async def recovers(server: ServerProcess, filler: Path, before: int) -> None:
    """With the filler gone: the session comes free, no turn is left running, the next turn
    completes and the history is valid."""
    os.unlink(filler)
    await eventually(lambda: session_free(server.address), what="the session to be free")
    db_path = filler.parent / "runtime.db"
    assert [row for row in turn_statuses(db_path) if row[2] == "running"] == []
    after = await attempt(server.address, user_message(SESSION, "and now?"))
    assert completed_normally(after), after
    messages = await history(server.address)
    assert len(messages) == before + 2, [(m.role, m.content) for m in messages]
    assert message_problems(messages) == []
    assert messages[-1].content == "noted"
    assert await session_free(server.address)


# -- the tests ----------------------------------------------------------------------------------


async def test_a_full_disk_refuses_the_turn_cleanly_and_the_runtime_recovers(
    server: ServerProcess, tiny_disk: Path
) -> None:
    db_path = tiny_disk / "runtime.db"
    first = await attempt(server.address, user_message(SESSION, "remember this"))
    assert completed_normally(first), first
    counts = row_counts(db_path)
    stored = [m.message_id for m in await history(server.address)]
    assert len(stored) == 2

    filler = fill(tiny_disk)
    refused = await attempt(server.address, user_message(SESSION, "and this?"))

    assert storage_failure_problems(refused) == [], refused
    assert await serving(server.address), server.output()
    # Nothing half-written: the history and every table are as the first turn left them.
    messages = await history(server.address)
    assert [m.message_id for m in messages] == stored
    assert message_problems(messages) == []
    assert row_counts(db_path) == counts
    assert await session_free(server.address)

    await recovers(server, filler, before=len(stored))


async def test_a_disk_filling_up_mid_turn_fails_the_turn_not_the_runtime(
    server: ServerProcess, tiny_disk: Path, model: FakeModelServer
) -> None:
    first = await attempt(server.address, user_message(SESSION, "remember this"))
    assert completed_normally(first), first
    filled: list[Path] = []

    async def fill_while_answering(_body: dict[str, Any]) -> None:
        # Commit #1 (input, turn row) is done when the model is asked; commit #2 will fail.
        if not filled:
            filled.append(fill(tiny_disk))

    model.on_request = fill_while_answering
    broken = await attempt(server.address, user_message(SESSION, "and this?"))
    model.on_request = None

    assert filled, "the model was never asked"
    assert broken.chunks and broken.chunks[0].HasField("turn_started"), broken
    # Checked last, so that whatever else a failure here broke is reported too.
    contract = storage_failure_problems(broken)
    assert not any("INTERNAL" in problem for problem in contract), contract
    assert not any(c.HasField("assistant_message") for c in broken.chunks), broken
    assert await serving(server.address), server.output()
    # The input survived (commit #1); no answer was half-written.
    messages = await history(server.address)
    assert [(m.role, m.content) for m in messages] == [
        (ses.ROLE_USER, "remember this"),
        (ses.ROLE_ASSISTANT, "noted"),
        (ses.ROLE_USER, "and this?"),
    ]
    assert message_problems(messages) == []
    assert messages[-1].message_id == broken.chunks[0].turn_started.input_message_id

    await recovers(server, filled[0], before=3)
    assert contract == [], contract
