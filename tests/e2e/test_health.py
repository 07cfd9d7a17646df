"""Health means something: SERVING only while the database answers at the schema this server
needs; NOT_SERVING when it does not (stale revision, missing table, a database that hangs)
and while draining. Observed through real Check and Watch calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from agent_runtime import bootstrap
from agent_runtime.api.server import SERVICE_NAMES
from agent_runtime.infrastructure.db.engine import create_engine
from tests.support.databases import alembic_version_locked, query
from tests.support.waiting import eventually

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_SECONDS = 10.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "observability": {
            "health_check_interval_seconds": 0.05,
            "health_check_timeout_seconds": 0.5,
        }
    }


@pytest.fixture
async def health(runtime: bootstrap.RunningRuntime) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)


async def execute(database_url: str, sql: str) -> None:
    """One statement, committed, through a connection of the test's own."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def revision(database_url: str) -> str:
    [(value,)] = await query(database_url, "SELECT version_num FROM alembic_version")
    return str(value)


async def status(health: health_pb2_grpc.HealthStub, service: str = "") -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def next_status(watch: Any) -> int:
    response = await asyncio.wait_for(watch.read(), WAIT_SECONDS)
    assert response is not grpc.aio.EOF
    return int(response.status)


async def test_serving_for_every_service_once_started(
    health: health_pb2_grpc.HealthStub,
) -> None:
    for service in ("", *SERVICE_NAMES):
        assert await status(health, service) == SERVING, service


async def test_a_stale_schema_revision_is_not_serving_until_fixed(
    health: health_pb2_grpc.HealthStub, database_url: str
) -> None:
    head = await revision(database_url)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert await next_status(watch) == SERVING

    await execute(database_url, "UPDATE alembic_version SET version_num = '0001'")
    assert await next_status(watch) == NOT_SERVING
    assert await status(health, "agent_runtime.v1.AgentRuntimeService") == NOT_SERVING

    await execute(database_url, f"UPDATE alembic_version SET version_num = '{head}'")
    assert await next_status(watch) == SERVING
    watch.cancel()


async def test_a_database_without_its_schema_is_not_serving(
    health: health_pb2_grpc.HealthStub, database_url: str
) -> None:
    await execute(database_url, "ALTER TABLE alembic_version RENAME TO alembic_version_moved")

    async def not_serving() -> bool:
        return await status(health) == NOT_SERVING

    await eventually(not_serving, within_seconds=WAIT_SECONDS, what="NOT_SERVING")

    await execute(database_url, "ALTER TABLE alembic_version_moved RENAME TO alembic_version")

    async def serving() -> bool:
        return await status(health) == SERVING

    await eventually(serving, within_seconds=WAIT_SECONDS, what="SERVING again")


# PostgreSQL only (these params replace database_url's own, one per backend): a WAL reader
# waits for no lock another client can take while the server has the file open
# (tests/integration/test_readiness_probe.py takes one before it does).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_database_that_does_not_answer_is_not_serving_after_the_timeout(
    health: health_pb2_grpc.HealthStub, database_url: str
) -> None:
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert await next_status(watch) == SERVING
    engine = create_engine(database_url)
    try:
        async with alembic_version_locked(engine):
            # The check's read waits for the lock as long as it is held; the checker gives
            # up after its own 0.5 s timeout and says so.
            assert await next_status(watch) == NOT_SERVING
    finally:
        await engine.dispose()
    assert await next_status(watch) == SERVING
    watch.cancel()


async def test_draining_is_not_serving(runtime: bootstrap.RunningRuntime) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert await next_status(watch) == SERVING
        # With a grace period, so the open Watch hears NOT_SERVING before calls are cut.
        stopping = asyncio.create_task(runtime.stop(grace=5))
        assert await next_status(watch) == NOT_SERVING
        watch.cancel()  # the last open call: the server stops now
        await asyncio.wait_for(stopping, WAIT_SECONDS)
