"""Fixtures: a real runtime on a real port, a real database (a SQLite file, and a scratch
PostgreSQL schema: see tests/support/databases.py) and a real HTTP model endpoint.

Registered for every test by tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.config import Settings
from agent_runtime.v1 import (
    agent_pb2_grpc,
    agent_runtime_pb2,
    agent_runtime_pb2_grpc,
    event_pb2_grpc,
    session_pb2_grpc,
    usage_pb2_grpc,
)
from tests.support.databases import BACKENDS
from tests.support.fake_model_server import FakeModelServer
from tests.support.migrated_databases import migrated_database_for


@dataclass
class Client:
    runtime: agent_runtime_pb2_grpc.AgentRuntimeServiceStub
    sessions: session_pb2_grpc.SessionServiceStub
    agents: agent_pb2_grpc.AgentServiceStub
    events: event_pb2_grpc.EventServiceStub
    channel: grpc.aio.Channel
    usage: usage_pb2_grpc.UsageServiceStub

    async def turn(
        self, request: agent_runtime_pb2.StreamMessageRequest
    ) -> list[agent_runtime_pb2.StreamChunk]:
        return [chunk async for chunk in self.runtime.StreamMessage(request)]


def connect(channel: grpc.aio.Channel) -> Client:
    return Client(
        agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel),
        session_pb2_grpc.SessionServiceStub(channel),
        agent_pb2_grpc.AgentServiceStub(channel),
        event_pb2_grpc.EventServiceStub(channel),
        channel,
        usage_pb2_grpc.UsageServiceStub(channel),
    )


@pytest.fixture
async def model_server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runtime.db"


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[str]:
    """Every test that takes it runs once per backend, on a database at the newest schema
    revision (a runtime's start then finds nothing to migrate)."""
    async with migrated_database_for(request.param, str(db_path)) as url:
        yield url


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without the runtime's variables (AGENT_RUNTIME_*, the test
    suite's own AGENT_RUNTIME_TEST_* aside), to set the ones a test reads."""
    for name in os.environ:
        if name.startswith("AGENT_RUNTIME_") and not name.startswith("AGENT_RUNTIME_TEST_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def settings_overrides() -> dict[str, dict[str, Any]]:
    """Override in a test module to change the runtime's settings: concern -> field -> value,
    e.g. {"model": {"max_attempts": 2}} (the concerns are the fields of config.Settings)."""
    return {}


@asynccontextmanager
async def running_runtime(
    model_server: FakeModelServer,
    database_url: str,
    settings_overrides: dict[str, dict[str, Any]],
) -> AsyncIterator[bootstrap.RunningRuntime]:
    """A runtime on a free port of 127.0.0.1, on `database_url`, its model `model_server`."""
    values: dict[str, dict[str, Any]] = {
        "server": {"listen": "127.0.0.1:0"},
        "database": {"url": database_url},
        "model": {
            "base_url": model_server.base_url,
            "api_key": "sk-test",
            "retry_base_delay": 0.01,
        },
        "fake_model": {"word_delay_ms": 0},  # a test with the built-in fake model waits for nothing
    }
    for concern, fields in settings_overrides.items():
        values[concern] = values.get(concern, {}) | fields
    settings = Settings.model_validate(values)
    running = await bootstrap.start(settings)
    try:
        yield running
    finally:
        await running.stop(grace=None)
    assert running.http is None or running.http.is_closed  # the model HTTP client was closed


@pytest.fixture
async def runtime(
    model_server: FakeModelServer,
    database_url: str,
    settings_overrides: dict[str, dict[str, Any]],
) -> AsyncIterator[bootstrap.RunningRuntime]:
    async with running_runtime(model_server, database_url, settings_overrides) as running:
        yield running


@pytest.fixture
async def client(runtime: bootstrap.RunningRuntime) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        yield connect(channel)
