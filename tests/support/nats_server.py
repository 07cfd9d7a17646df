"""The NATS server the chunk-relay tests use (127.0.0.1:4222 on the CI machine).

It runs when AGENT_RUNTIME_TEST_NATS_URL names it (CI sets it); without the variable those
tests skip, saying why; with it and no server, they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from agent_runtime.infrastructure.nats_relay import NatsChunkRelay, RelayUnavailable

NATS_URL_VARIABLE = "AGENT_RUNTIME_TEST_NATS_URL"


def nats_url() -> str:
    """The NATS server to relay through, or a skip saying how to get one."""
    url = os.environ.get(NATS_URL_VARIABLE, "")
    if not url:
        pytest.skip(
            f"chunk relay over NATS: set {NATS_URL_VARIABLE}=nats://127.0.0.1:4222 to run it"
        )
    return url


@asynccontextmanager
async def connected_relay(url: str) -> AsyncIterator[NatsChunkRelay]:
    try:
        relay = await NatsChunkRelay.connect(url, within_seconds=5)
    except RelayUnavailable as exc:
        pytest.fail(f"{NATS_URL_VARIABLE} is set but NATS is not reachable: {exc}")
    try:
        yield relay
    finally:
        await relay.close()
