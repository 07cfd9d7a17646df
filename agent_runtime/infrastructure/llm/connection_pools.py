"""ShardedConnectionPool: model requests spread over several small connection pools.

httpcore's connection pool walks every connection it holds each time a request starts or
ends: it checks each one's expiry, polls each idle socket (through anyio's attribute
lookup, which builds a dict per call), and counts all connections once per idle one, which
makes the walk quadratic. With one pool of many streaming connections that walk cost 12 % of
the event loop at 32 concurrent turns; with pools of 16 it cost 2.7 % (py-spy, see
docs/benchmarks/README.md). Small pools keep each walk short.

A request goes to the first pool with a free connection, in order. So under light load
every request uses pool 0 and its warm keep-alive connections (no new TCP or TLS
handshake), and only concurrency spreads requests over more pools. When every connection
is busy, a request waits for the first one freed in any pool, in arrival order, up to
httpx's pool timeout, as with one pool.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator

import httpx

# Connections per pool: small enough that a pool's walk is cheap, large enough that
# light load never leaves pool 0.
CONNECTIONS_PER_POOL = 8


class ShardedConnectionPool(httpx.AsyncBaseTransport):
    """An httpx transport made of up to ceil(max_connections / per_pool) pools, each made
    when first needed; they share one TLS context. Their sizes add up to max_connections
    (the last pool takes the remainder)."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        per_pool: int = CONNECTIONS_PER_POOL,
    ) -> None:
        if max_connections < 1 or per_pool < 1:
            raise ValueError("max_connections and per_pool must be at least 1")
        count = math.ceil(max_connections / per_pool)
        self._sizes = [min(per_pool, max_connections - i * per_pool) for i in range(count)]
        self._keepalive_expiry = keepalive_expiry
        self._tls: ssl.SSLContext | None = None
        self._pools: list[httpx.AsyncHTTPTransport | None] = [None] * count
        self._free = asyncio.Semaphore(max_connections)  # connections not serving a request
        # Requests each pool is serving: sent, and their response not yet closed.
        self.in_flight = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._take_a_connection(request)
        index = self._choose()
        pool = self._pools[index] or self._open(index)
        self.in_flight[index] += 1
        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            self.release(index)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport's
        response.stream = _Released(response.stream, self, index)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            if pool is not None:
                await pool.aclose()

    def release(self, index: int) -> None:
        self.in_flight[index] -= 1
        self._free.release()

    async def _take_a_connection(self, request: httpx.Request) -> None:
        timeouts = request.extensions.get("timeout") or {}
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._free.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                "no free connection to the model endpoint", request=request
            ) from None

    def _open(self, index: int) -> httpx.AsyncHTTPTransport:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()  # loads the CA bundle: once, not per pool
        size = self._sizes[index]
        limits = httpx.Limits(
            max_connections=size,
            max_keepalive_connections=size,
            keepalive_expiry=self._keepalive_expiry,
        )
        pool = self._pools[index] = httpx.AsyncHTTPTransport(verify=self._tls, limits=limits)
        return pool

    def _choose(self) -> int:
        """The first pool with a free connection (there is one: a connection was taken)."""
        for index, busy in enumerate(self.in_flight):
            if busy < self._sizes[index]:
                return index
        raise AssertionError("a connection was taken but no pool has one free")


class _Released(httpx.AsyncByteStream):
    """A response body that frees its pool's slot when it is closed (once)."""

    def __init__(
        self, stream: httpx.AsyncByteStream, owner: ShardedConnectionPool, index: int
    ) -> None:
        self._stream = stream
        self._owner: ShardedConnectionPool | None = owner
        self._index = index

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # the body's own iterator: no layer per piece

    async def aclose(self) -> None:
        owner, self._owner = self._owner, None
        try:
            await self._stream.aclose()
        finally:
            if owner is not None:
                owner.release(self._index)
