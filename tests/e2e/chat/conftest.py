"""Fixtures of the `agent-runtime chat` tests: a runtime server process and a workspace; every
chat opened is ended after its test, even one that failed while the client hung."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent_runtime.client import AgentRuntimeClient
from tests.support.chat_terminal import Terminal, serving
from tests.support.fake_model_server import FakeModelServer
from tests.support.server_process import ServerProcess


@pytest.fixture(autouse=True)
def _terminals_closed() -> Iterator[None]:
    yield
    Terminal.close_all()


@pytest.fixture
async def server(model_server: FakeModelServer, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with serving(model_server, tmp_path) as process:
        yield process


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path.resolve()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[AgentRuntimeClient]:
    async with AgentRuntimeClient(server.address) as client:
        yield client
