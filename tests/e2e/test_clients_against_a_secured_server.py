"""The Python client and the terminal client against `agent-runtime serve` with API keys and
mutual TLS: the whole path a deployed client takes, through the real process and its flags."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent_runtime.client import AgentRuntimeClient, AgentRuntimeError, TlsConfig
from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.certificates import Certificates, make_certificates
from tests.support.cli_process import run_cli
from tests.support.server_process import ServerProcess

KEY_A = "key-a-5f1e0c2d"
KEY_B = "key-b-9a7b3e41"


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
async def server(tmp_path: Path, certificates: Certificates) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "rt.db",
        env={
            "AGENT_RUNTIME_API_KEYS": f"{KEY_A}=tenant-a,{KEY_B}=tenant-b",
            "AGENT_RUNTIME_TLS_CERT_FILE": str(certificates.server_cert),
            "AGENT_RUNTIME_TLS_KEY_FILE": str(certificates.server_key),
            "AGENT_RUNTIME_TLS_CLIENT_CA_FILE": str(certificates.ca),
        },
    )
    await process.start()
    yield process
    assert await process.terminate() == 0, process.output()
    assert KEY_A not in process.output() and KEY_B not in process.output()


def _client(server: ServerProcess, certificates: Certificates, key: str) -> AgentRuntimeClient:
    tls = TlsConfig.from_files(
        ca_file=certificates.ca,
        cert_file=certificates.client_cert,
        key_file=certificates.client_key,
    )
    return AgentRuntimeClient(f"localhost:{server.port}", api_key=key, tls=tls)


def _tls_flags(certificates: Certificates) -> list[str]:
    return [
        "--tls-ca",
        str(certificates.ca),
        "--tls-cert",
        str(certificates.client_cert),
        "--tls-key",
        str(certificates.client_key),
    ]


async def test_the_python_client_runs_a_turn_for_its_tenant_only(
    server: ServerProcess, certificates: Certificates
) -> None:
    async with _client(server, certificates, KEY_A) as tenant_a:
        chunks = [chunk async for chunk in tenant_a.stream_message("shared-id", "hello")]
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        assert (
            "hello"
            in next(c for c in chunks if c.HasField("assistant_message")).assistant_message.content
        )
        assert (await tenant_a.get_session("shared-id")).message_count == 2

    async with _client(server, certificates, KEY_B) as tenant_b:
        with pytest.raises(AgentRuntimeError) as caught:
            await tenant_b.get_session("shared-id")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == "SESSION_NOT_FOUND"

    async with _client(server, certificates, "not-a-key") as stranger:
        with pytest.raises(AgentRuntimeError) as caught:
            await stranger.get_session("shared-id")
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.reason == "API_KEY_INVALID"


async def test_the_sessions_command_uses_the_key_and_the_certificates(
    server: ServerProcess, certificates: Certificates
) -> None:
    async with _client(server, certificates, KEY_A) as tenant_a:
        async for _ in tenant_a.stream_message("from-a", "hello"):
            pass
    target = ["--target", f"localhost:{server.port}", *_tls_flags(certificates)]

    mine = await run_cli("sessions", "list", "--json", "--api-key", KEY_A, *target)
    assert mine.returncode == 0, mine.stderr
    assert [s["session_id"] for s in json.loads(mine.stdout)] == ["from-a"]

    theirs = await run_cli("sessions", "list", "--json", "--api-key", KEY_B, *target)
    assert theirs.returncode == 0, theirs.stderr
    assert json.loads(theirs.stdout) == []

    refused = await run_cli("sessions", "list", "--api-key", "not-a-key", *target)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr and "not-a-key" not in refused.stderr
