"""TLS, mutual TLS, development mode and HTTP/2 transport settings on a real port."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr

from agent_runtime import bootstrap
from agent_runtime.access_config import ApiKeySettings
from agent_runtime.api.transport import TlsFiles, Transport
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.config import DatabaseSettings, ServerSettings, Settings
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc
from tests.support.certificates import Certificates, make_certificates
from tests.support.grpc_helpers import kinds, rich_error, user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

KEY = "tls-test-key-5e4d3c2b1a0f9e8d"
AUTH = (("authorization", f"Bearer {KEY}"),)
# The server certificate names localhost; the tests dial 127.0.0.1 and check that name.
TLS_NAME = (("grpc.ssl_target_name_override", "localhost"),)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certificates")


@pytest.fixture
def other_certs(tmp_path: Path) -> Certificates:
    """A second, unrelated CA and its certificates: trusted by nobody here."""
    return make_certificates(tmp_path / "other-certificates")


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[bootstrap.RunningRuntime]:
    runtime = await bootstrap.start(settings)
    try:
        yield runtime
    finally:
        await runtime.stop(grace=None)


def tls_settings(
    tmp_path: Path, certs: Certificates, listen: str = "127.0.0.1:0", **tls: str
) -> Settings:
    return Settings(
        server=ServerSettings(listen=listen),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
        api_keys=ApiKeySettings(keys=SecretStr(f"{KEY}=tenant-a")),
        tls=TlsFiles.model_validate(
            {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key)} | tls
        ),
    )


def channel_credentials(
    ca: Path, client: tuple[Path, Path] | None = None
) -> grpc.ChannelCredentials:
    cert, key = client if client else (None, None)
    return grpc.ssl_channel_credentials(
        ca.read_bytes(),
        key.read_bytes() if key else None,
        cert.read_bytes() if cert else None,
    )


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
    tmp_path: Path, certs: Certificates, other_certs: Certificates
) -> None:
    # With TLS and keys, the server may listen beyond loopback.
    async with running(tls_settings(tmp_path, certs, listen="0.0.0.0:0")) as runtime:
        address = f"127.0.0.1:{runtime.port}"
        trusted = channel_credentials(certs.ca)
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
        untrusted = channel_credentials(other_certs.ca)
        async with grpc.aio.secure_channel(address, untrusted, options=TLS_NAME) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_signed_by_the_client_ca(
    tmp_path: Path, certs: Certificates, other_certs: Certificates
) -> None:
    settings = tls_settings(tmp_path, certs, client_ca_file=str(certs.ca))
    async with running(settings) as runtime:
        address = f"127.0.0.1:{runtime.port}"
        for credentials in (
            channel_credentials(certs.ca),  # no client certificate
            channel_credentials(certs.ca, (other_certs.client_cert, other_certs.client_key)),
        ):
            async with grpc.aio.secure_channel(address, credentials, options=TLS_NAME) as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE

        with_cert = channel_credentials(certs.ca, (certs.client_cert, certs.client_key))
        async with grpc.aio.secure_channel(address, with_cert, options=TLS_NAME) as channel:
            assert list((await list_sessions(channel)).sessions) == []


async def test_an_unreadable_tls_file_stops_start_up_naming_it(
    tmp_path: Path, certs: Certificates
) -> None:
    settings = tls_settings(tmp_path, certs, key_file=str(tmp_path / "no-such.key"))
    with pytest.raises(ValueError, match=r"cannot read a TLS file.*no-such\.key"):
        await bootstrap.start(settings)


async def test_development_mode_says_so_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
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
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
        turns=TurnSettings(max_message_bytes=1000),
        transport=Transport(
            max_receive_message_bytes=4000,
            keepalive_time_ms=30_000,
            max_concurrent_streams_per_connection=4,
        ),
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


class Http2PingCounter:
    """Reads the server's side of an HTTP/2 connection as it passes a proxy and counts its
    PING frames (type 6) that are not acknowledgements: the server's own pings."""

    def __init__(self) -> None:
        self.pings = 0
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            frame_type, flags = self._buffer[3], self._buffer[4]
            if frame_type == 0x6 and not flags & 0x1:
                self.pings += 1
            self._buffer = self._buffer[9 + length :]


async def test_the_server_sends_keepalive_pings_on_a_quiet_stream(tmp_path: Path) -> None:
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
        transport=Transport(
            keepalive_time_ms=100,
            keepalive_timeout_ms=5_000,
            max_pings_without_data=0,  # keep pinging through a long silence
        ),
    )
    counter = Http2PingCounter()
    async with running(settings) as runtime, TcpProxy("127.0.0.1", runtime.port) as proxy:
        proxy.on_reply = counter.feed
        async with grpc.aio.insecure_channel(proxy.address) as channel:
            # A watch with nothing to report: the stream stays open and silent.
            watch = connect(channel).events.WatchEvents(ev.WatchEventsRequest())
            await watch.initial_metadata()
            # From here on the client sends nothing, so no ping is a flow-control probe
            # (gRPC sends those as data arrives): every further one is a keepalive ping.
            before = counter.pings

            async def pinged_repeatedly() -> bool:
                return counter.pings >= before + 3

            await eventually(pinged_repeatedly, what="three keepalive pings from the server")
            # The connection survived them: the client answered every ping.
            assert list((await list_sessions_plain(channel)).sessions) == []
            watch.cancel()


async def list_sessions_plain(channel: grpc.aio.Channel) -> ses.ListSessionsResponse:
    response: ses.ListSessionsResponse = await session_pb2_grpc.SessionServiceStub(
        channel
    ).ListSessions(ses.ListSessionsRequest(), timeout=10)
    return response
