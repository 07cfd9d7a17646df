"""The aiohttp transport's own fixes, and the canary for the private parts it reads.

The model client's behaviour on this transport (and on httpx's own) is tested through the
client in test_openai_compatible_client.py and test_model_endpoint_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import TransferEncodingError

from agent_runtime.infrastructure.llm import aiohttp_transport as transport_module
from agent_runtime.infrastructure.llm.aiohttp_transport import (
    aiohttp_transport,
    httpx_error,
    read_any,
)

BODY = b"data: [DONE]\n\n"


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """Answers every request on a connection with `answer`, then keeps it open."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"


def transport() -> httpx.AsyncBaseTransport:
    return aiohttp_transport(
        limits=httpx.Limits(max_connections=4, keepalive_expiry=5.0),
        ssl_context=ssl.create_default_context(),
        proxy=None,
    )


async def test_canary_the_private_parts_the_transport_reads_are_there() -> None:
    # httpx-aiohttp's response stream holds the aiohttp response (`_aiohttp_response`), and
    # aiohttp's connection protocol resolves a `closed` future when the connection is lost.
    # When this fails after an upgrade, aiohttp_transport.py must change before the pins.
    # A body still open: its connection is still the response's.
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(BODY), BODY)
    )
    sender = transport()
    async with raw_server(answer) as url:
        response = await sender.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        try:
            assert isinstance(response.stream, transport_module._ResponseBody), (
                "httpx-aiohttp no longer keeps the aiohttp response as _aiohttp_response"
            )
            aiohttp_response = response.stream._response
            assert aiohttp_response.connection is not None
            protocol = aiohttp_response.connection.protocol
            assert protocol is not None
            assert isinstance(protocol.closed, asyncio.Future), "no ResponseHandler.closed"
            assert protocol.exception() is None
            assert await anext(aiter(response.stream)) == BODY
        finally:
            await response.aclose()
            await sender.aclose()


async def test_a_read_after_aiohttp_dropped_the_body_is_a_protocol_error() -> None:
    # When a body's chunked framing breaks after the first event, aiohttp drops the body
    # without failing its reader and closes the connection: the next read raises a bare
    # RuntimeError, which would reach the turn as an unexpected (INTERNAL) error.
    loop = asyncio.get_running_loop()
    gone = BaseProtocol(loop)  # no transport: the connection aiohttp closed
    body = aiohttp.StreamReader(gone, 2**16, loop=loop)
    with pytest.raises(httpx.RemoteProtocolError, match="closed before the end of the body"):
        await read_any(body)


async def test_a_framing_error_raised_by_the_pure_python_parser_is_a_protocol_error() -> None:
    # Without aiohttp's C extension (AIOHTTP_NO_EXTENSIONS=1, no wheel for the platform) a
    # broken chunk fails the body's reader with a raw TransferEncodingError, no ClientError.
    loop = asyncio.get_running_loop()
    body = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    body.set_exception(TransferEncodingError("Not enough data to satisfy transfer length"))
    with pytest.raises(httpx.RemoteProtocolError, match="transfer length"):
        await read_any(body)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            httpx.RemoteProtocolError,
        ),
        (aiohttp.ConnectionTimeoutError("Connection timeout"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), httpx.ReadTimeout),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.NonHttpUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_aiohttp_failures_become_what_httpx_itself_raises(
    raised: BaseException, expected: type[httpx.TransportError]
) -> None:
    # httpx-aiohttp 0.2 maps every ClientConnectionError to ConnectTimeout: a connection lost
    # mid-answer would read as "unreachable". Its mapping is decided again from the cause.
    mapped_by_the_library = httpx.ConnectTimeout(str(raised))
    mapped_by_the_library.__cause__ = raised

    assert type(httpx_error(raised)) is expected
    assert type(httpx_error(mapped_by_the_library)) is expected


async def test_a_server_closing_before_answering_is_not_a_connect_timeout() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server, httpx.AsyncClient(transport=transport()) as client:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected"):
            await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{}")
