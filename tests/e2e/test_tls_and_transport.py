"""TLS, mutual TLS, development mode and HTTP/2 transport settings on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.config import Settings
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc
from tests.support.certificates import CertificateAuthority, Credential
from tests.support.grpc_helpers import kinds, rich_error, user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

KEY = "tls-test-key-5e4d3c2b1a0f9e8d"
AUTH = (("authorization", f"Bearer {KEY}"),)
# The server certificate names localhost; the tests dial 127.0.0.1 and check that name.
TLS_NAME = (("grpc.ssl_target_name_override", "localhost"),)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[bootstrap.RunningRuntime]:
    runtime = await bootstrap.start(settings)
    try:
        yield runtime
    finally:
        await runtime.stop(grace=None)


def tls_settings(tmp_path: Path, server: Credential, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}",
        "api_keys": {KEY: "tenant-a"},
        "tls_cert_file": str(server.cert_file),
        "tls_key_file": str(server.key_file),
    }
    return Settings(**(values | more))


async def list_sessions(channel: grpc.aio.Channel) -> ses.ListSessionsResponse:
    stub = session_pb2_grpc.SessionServiceStub(channel)
    response: ses.ListSessionsResponse = await stub.ListSessions(
        ses.ListSessionsRequest(), metadata=AUTH, timeout=10
    )
    return response


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_sessions(channel)
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_tls_serves_secure_channels_and_refuses_plaintext(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    # With TLS and keys, the server may listen beyond loopback.
    settings = tls_settings(tmp_path, ca.server(), listen="0.0.0.0:0")
    async with running(settings) as runtime:
        address = f"127.0.0.1:{runtime.port}"
        trusted = grpc.ssl_channel_credentials(root_certificates=ca.cert)
        async with grpc.aio.secure_channel(address, trusted, options=TLS_NAME) as channel:
            assert list((await list_sessions(channel)).sessions) == []
            turn = (
                await connect(channel)
                .runtime.StreamMessage(user_message("s1", "hi"), metadata=AUTH)
                .read()
            )
            assert turn.WhichOneof("chunk") == "turn_started"
        async with grpc.aio.insecure_channel(address) as plaintext:
            assert await refused(plaintext) == grpc.StatusCode.UNAVAILABLE
        stranger = CertificateAuthority(tmp_path / "..", "stranger CA")
        untrusted = grpc.ssl_channel_credentials(root_certificates=stranger.cert)
        async with grpc.aio.secure_channel(address, untrusted, options=TLS_NAME) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_signed_by_the_client_ca(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    settings = tls_settings(tmp_path, ca.server(), tls_client_ca_file=str(ca.cert_file))
    async with running(settings) as runtime:
        address = f"127.0.0.1:{runtime.port}"
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca.cert)
        async with grpc.aio.secure_channel(address, no_cert, options=TLS_NAME) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE

        other_ca = CertificateAuthority(tmp_path / "..", "other CA")
        foreign = other_ca.client("intruder")
        wrong_cert = grpc.ssl_channel_credentials(ca.cert, foreign.key, foreign.cert)
        async with grpc.aio.secure_channel(address, wrong_cert, options=TLS_NAME) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE

        client = ca.client()
        with_cert = grpc.ssl_channel_credentials(ca.cert, client.key, client.cert)
        async with grpc.aio.secure_channel(address, with_cert, options=TLS_NAME) as channel:
            assert list((await list_sessions(channel)).sessions) == []


async def test_an_unreadable_tls_file_stops_start_up_naming_it(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server = ca.server()
    settings = tls_settings(tmp_path, Credential(server.cert_file, tmp_path / "no-such.key"))
    with pytest.raises(ValueError, match=r"cannot read a TLS file.*no-such\.key"):
        await bootstrap.start(settings)


async def test_development_mode_says_so_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(
        listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"
    )
    async with running(settings):
        pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "development mode" in r.getMessage() and "no API keys" in r.getMessage() for r in warnings
    )


async def test_serve_with_keys_listens_beyond_loopback_and_checks_them(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "rt.db",
        env={"AGENT_RUNTIME_LISTEN": "0.0.0.0:0", "AGENT_RUNTIME_API_KEYS": f"{KEY}=tenant-a"},
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListSessions(ses.ListSessionsRequest())
            info = rich_error(caught.value).error_info
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info is not None and info.reason == "API_KEY_MISSING"
            assert list((await list_sessions(channel)).sessions) == []
    finally:
        assert await server.terminate() == 0, server.output()
    assert KEY not in server.output()
    assert "without TLS" in server.output()  # the warning for keys in clear text


# -- transport settings ------------------------------------------------------------------------


async def test_message_size_limits_apply_and_normal_traffic_flows(
    tmp_path: Path,
) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}",
        max_message_bytes=1000,
        grpc_max_receive_message_bytes=4000,
        grpc_keepalive_time_ms=30_000,
        grpc_max_concurrent_streams_per_connection=4,
    )
    async with (
        running(settings) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        client = connect(channel)
        chunks = [c async for c in client.runtime.StreamMessage(user_message("s1", "hi"))]
        assert kinds(chunks)[-1] == "turn_completed"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.sessions.CreateSession(ses.CreateSessionRequest(title="x" * 5000))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class FrameCountingProxy:
    """Forwards TCP between a client and the server, counting the server's HTTP/2 PING
    frames (type 6, without the ACK flag): the server's keepalive pings."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self.server_pings = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._server_frames(up_reader, writer)),
        ):
            self._tasks.add(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _server_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                frame_type, flags = header[3], header[4]
                payload = await reader.readexactly(length)
                if frame_type == 0x6 and not flags & 0x1:
                    self.server_pings += 1
                writer.write(header + payload)
                await writer.drain()
        writer.close()


async def test_the_server_sends_keepalive_pings_on_a_quiet_stream(tmp_path: Path) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}",
        grpc_keepalive_time_ms=100,
        grpc_keepalive_timeout_ms=5_000,
        grpc_max_pings_without_data=0,  # keep pinging through a long silence
    )
    async with running(settings) as runtime:
        proxy = FrameCountingProxy(runtime.port)
        port = await proxy.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                # A watch with nothing to report: the stream stays open and silent.
                watch = connect(channel).events.WatchEvents(ev.WatchEventsRequest())
                await watch.initial_metadata()
                # From here on the client sends nothing, so no ping is a flow-control probe
                # (gRPC sends those as data arrives): every further one is a keepalive ping.
                before = proxy.server_pings

                async def pinged_repeatedly() -> bool:
                    return proxy.server_pings >= before + 3

                await eventually(pinged_repeatedly, what="three keepalive pings from the server")
                # The connection survived them: the client answered every ping.
                assert list((await list_sessions_plain(channel)).sessions) == []
                watch.cancel()
        finally:
            await proxy.stop()


async def list_sessions_plain(channel: grpc.aio.Channel) -> ses.ListSessionsResponse:
    response: ses.ListSessionsResponse = await session_pb2_grpc.SessionServiceStub(
        channel
    ).ListSessions(ses.ListSessionsRequest(), timeout=10)
    return response
