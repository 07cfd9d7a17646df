"""httpx requests sent through aiohttp's connection pool: the model client's default transport.

httpx-aiohttp's AiohttpTransport (the way the OpenAI Python SDK offers aiohttp) keeps httpx's
API and spends about a third of httpx's own transport's CPU per streamed answer
(docs/benchmarks/model-client-cpu.md). This is the only module that imports aiohttp (an
import-linter contract). It fixes what the library gets wrong for a streaming model client:

- Exceptions. httpx-aiohttp 0.2 maps every aiohttp.ClientConnectionError to
  httpx.ConnectTimeout (a refused connection and a connection lost mid-answer alike) and lets
  the others through raw. Here each becomes what httpx's own transport raises in that case.
- A body whose chunked framing broke. aiohttp's C parser (3.14) then forgets the body without
  failing its reader: a read already waiting would wait for the idle deadline, and the next
  read raises a bare RuntimeError. Here the read fails as soon as the connection is lost.
- Reads hand over whatever has arrived (one piece per network read), and a response closed
  before its end closes its connection, so the endpoint learns to stop generating.

It reads two private things: the aiohttp response behind httpx-aiohttp's response stream,
and the `closed` future of aiohttp's connection protocol. Both libraries are pinned below
their next minor version in pyproject.toml; tests/integration/test_aiohttp_transport.py holds
the canary that fails when either moves.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx
from aiohttp.http_exceptions import HttpProcessingError
from httpx_aiohttp import AiohttpTransport

# aiohttp's exception -> httpx's, most specific first (the first isinstance match wins).
_EXCEPTIONS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connecting, or a free connection
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # the read timeout
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),  # the proxy refused the tunnel
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    # A body that ended early or broke, a response head that is not HTTP, a server that
    # closed the connection: httpx (h11) calls all of these the remote's protocol error.
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (HttpProcessingError, httpx.RemoteProtocolError),  # the pure-Python parser, raw
    (aiohttp.ClientConnectionError, httpx.ReadError),  # a reset, another OSError
    (aiohttp.ClientError, httpx.TransportError),
)


def aiohttp_transport(
    *, limits: httpx.Limits, ssl_context: ssl.SSLContext, proxy: httpx.Proxy | None
) -> httpx.AsyncBaseTransport:
    """An httpx transport over one aiohttp connection pool of limits.max_connections
    connections (idle ones kept limits.keepalive_expiry seconds). Closed with the
    httpx.AsyncClient that uses it."""

    def session() -> aiohttp.ClientSession:  # called on the first request, in its loop
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limits.max_connections or 0,
                limit_per_host=0,  # every connection goes to the one model endpoint anyway
                keepalive_timeout=limits.keepalive_expiry,
                ssl=ssl_context,
            ),
            # httpx has done what these would: proxy, cookies, decompression.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    # A proxy's credentials go to aiohttp as `proxy_auth` (deprecated in aiohttp 3.14, still
    # the only way it authenticates a plain-HTTP request to a proxy).
    return _Transport(verify=ssl_context, limits=limits, proxy=proxy, client=session)


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError, HttpProcessingError) as exc:
            raise httpx_error(exc) from exc
        # Private to httpx-aiohttp (pinned; see the canary test).
        body = getattr(response.stream, "_aiohttp_response", None)
        if isinstance(body, aiohttp.ClientResponse):
            response.stream = _ResponseBody(body)
        return response


def httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for a failure of aiohttp's (raw, or as httpx-aiohttp mapped it)."""
    if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None:
        exc = exc.__cause__  # httpx-aiohttp's mapping: decide again from aiohttp's exception
    for aiohttp_type, httpx_type in _EXCEPTIONS:
        if isinstance(exc, aiohttp_type):
            return httpx_type(str(exc) or type(exc).__name__)
    return exc if isinstance(exc, httpx.TransportError) else httpx.TransportError(str(exc))


class _ResponseBody(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._stop_watching = _fail_body_when_connection_lost(response)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while chunk := await read_any(content):
            yield chunk

    async def aclose(self) -> None:
        self._stop_watching()  # before the connection can go back to the pool
        if self._response.content.at_eof():
            self._response.release()  # the whole body was read: the connection is reusable
        else:
            # Also on cancellation: a response closed before its end closes the connection,
            # which is how the endpoint learns to stop generating.
            self._response.close()


async def read_any(content: aiohttp.StreamReader) -> bytes:
    """Whatever has arrived (b"" at the end of the body); failures as httpx exceptions."""
    try:
        return await content.readany()
    # aiohttp (3.14) drops a body whose framing broke (a bad chunk size) without failing its
    # reader, and closes the connection: a read then raises this. (A read already waiting is
    # failed by _fail_body_when_connection_lost.)
    except RuntimeError as exc:
        raise httpx.RemoteProtocolError(
            f"the connection closed before the end of the body ({exc})"
        ) from exc
    except (aiohttp.ClientError, HttpProcessingError) as exc:
        raise httpx_error(exc) from exc


def _fail_body_when_connection_lost(response: aiohttp.ClientResponse) -> Callable[[], None]:
    """Makes a read waiting for `response`'s body fail as soon as its connection is lost,
    until the returned function is called (call it before the connection can be reused).

    When a body's chunked framing breaks (a chunk-size line that is not hex), aiohttp's C
    parser (3.14) raises out of ResponseHandler.data_received after forgetting the body (its
    own `_payload = None`): the connection is closed, but the body's reader is never failed
    (aiohttp's pure-Python parser does fail it). The protocol's `closed` future, resolved by
    connection_lost, is the signal; it costs a callback per response, nothing per read.
    `closed` is created lazily, on first access, and is None when the connection was lost
    before anyone asked: then no read can wait, it raises RuntimeError (see read_any).
    Without `closed` (another aiohttp) this improvement is lost, nothing else.
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    closed = getattr(protocol, "closed", None)
    if protocol is None or not isinstance(closed, asyncio.Future):
        return _nothing
    content = response.content

    def on_closed(future: asyncio.Future[None]) -> None:
        if content.is_eof() or content.exception() is not None:
            return  # the body was complete, or its reader already fails
        # The parser's error (HttpProcessingError) if that is why the connection closed.
        cause = protocol.exception()
        if cause is None and not future.cancelled():
            cause = future.exception()
        error = aiohttp.ClientPayloadError(
            "the connection closed before the end of the body"
            + (f" ({cause})" if cause is not None else "")
        )
        error.__cause__ = cause
        content.set_exception(error)

    # Whoever first asks for `closed` creates it, and must retrieve its exception (a reset
    # connection), or asyncio logs it when it is collected; one retriever per connection.
    closed.remove_done_callback(_retrieve_exception)
    closed.add_done_callback(_retrieve_exception)
    closed.add_done_callback(on_closed)

    def stop() -> None:
        closed.remove_done_callback(on_closed)

    return stop


def _nothing() -> None:
    pass


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
