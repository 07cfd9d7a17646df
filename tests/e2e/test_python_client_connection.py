"""How the client connects: TLS and mutual TLS with certificates the test makes, and the API
key it sends, against grpc.aio servers holding the real AgentService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime.api.agent_servicer import AgentServicer
from agent_runtime.client import NO_RETRIES, AgentRuntimeClient, AgentRuntimeError, TlsConfig
from agent_runtime.domain.agents import default_agents
from agent_runtime.v1 import agent_pb2_grpc
from tests.support.certificates import Certificates, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
async def mtls_port(certificates: Certificates) -> AsyncIterator[int]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(default_agents()), server)
    credentials = grpc.ssl_server_credentials(
        [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())],
        root_certificates=certificates.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield port
    await server.stop(None)


async def test_mutual_tls_with_the_client_certificate(
    mtls_port: int, certificates: Certificates
) -> None:
    tls = TlsConfig.from_files(
        ca_file=certificates.ca,
        cert_file=certificates.client_cert,
        key_file=certificates.client_key,
        server_name="localhost",
    )
    async with AgentRuntimeClient(f"127.0.0.1:{mtls_port}", tls=tls) as client:
        assert "coder" in {agent.name for agent in await client.list_agents()}


async def test_without_a_client_certificate_or_trust_the_handshake_fails(
    mtls_port: int, certificates: Certificates
) -> None:
    for tls in (
        TlsConfig.from_files(ca_file=certificates.ca),  # no client certificate
        TlsConfig(),  # the system's CAs do not know the test CA
    ):
        async with AgentRuntimeClient(
            f"127.0.0.1:{mtls_port}", tls=tls, retry=NO_RETRIES, timeout=10
        ) as client:
            with pytest.raises(AgentRuntimeError) as raised:
                await client.list_agents()
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_without_its_key_is_refused(certificates: Certificates) -> None:
    with pytest.raises(ValueError, match="private key"):
        TlsConfig.from_files(cert_file=Path(certificates.client_cert))


class RecordingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Keeps the metadata of every call, as an authenticating interceptor would see it."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        self.metadata.append(dict(handler_call_details.invocation_metadata))
        return await continuation(handler_call_details)


async def test_the_api_key_is_sent_as_a_bearer_token_on_every_call() -> None:
    recorder = RecordingInterceptor()
    server = grpc.aio.server(interceptors=[recorder])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(default_agents()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AgentRuntimeClient(f"127.0.0.1:{port}", api_key="key-1") as client:
            await client.list_agents()
            await client.list_agents()
        async with AgentRuntimeClient(f"127.0.0.1:{port}") as anonymous:
            await anonymous.list_agents()
    finally:
        await server.stop(None)
    assert [m.get("authorization") for m in recorder.metadata] == [
        "Bearer key-1",
        "Bearer key-1",
        None,
    ]


def test_the_private_key_never_shows_in_a_repr() -> None:
    tls = TlsConfig(b"ca", b"cert", b"-----BEGIN PRIVATE KEY----- secret")
    assert "secret" not in repr(tls) and "cert" in repr(tls)
