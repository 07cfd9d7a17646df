"""A real TCP proxy in front of a server, to break connections the way networks do.

async with TcpProxy("127.0.0.1", port) as proxy:
    proxy.refuse_next(1)       # the next connection is closed as soon as it is accepted
    ... connect to proxy.address ...
    proxy.hold_replies()       # open connections stop delivering the server's bytes
    proxy.reset_connections()  # and now they are gone (a reset, on both sides)
    proxy.on_reply = seen.feed # every chunk of bytes the server sends, as it passes
    proxy.delay_requests_from(b"SUB ", 0.2)  # a server that reads those bytes late
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    # While set, what the server sends is read and dropped: the client hears nothing more.
    holding: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._to_refuse = 0
        self.connections_accepted = 0
        self.port = 0
        self.on_reply: Callable[[bytes], None] | None = None
        self._late_marker = b""
        self._late_seconds = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refuse_next(self, count: int = 1) -> None:
        """Close the next `count` connections at once, before any byte is forwarded."""
        self._to_refuse += count

    def hold_replies(self) -> None:
        """The open connections stop delivering what the server sends (it is still read, so
        the server is not held up); new connections are not affected."""
        for connection in self._connections:
            connection.holding = True

    def delay_requests_from(self, marker: bytes, seconds: float) -> None:
        """What a client sends from `marker` on (in a chunk of bytes that holds it) reaches
        the server `seconds` late, the bytes before it at once: order is kept, as a server
        that reads late (a busy machine) keeps it."""
        self._late_marker, self._late_seconds = marker, seconds

    def reset_connections(self) -> None:
        for connection in list(self._connections):
            connection.abort()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.reset_connections()
        tasks = [task for c in self._connections for task in c.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if self._to_refuse:
            self._to_refuse -= 1
            writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        connection = _Connection(writer, server_writer)
        self._connections.add(connection)
        connection.tasks = [
            asyncio.create_task(
                self._pump(reader, server_writer, connection, replies=False, late=self._late)
            ),
            asyncio.create_task(
                self._pump(server_reader, writer, connection, replies=True, seen=self.on_reply)
            ),
        ]
        try:
            await asyncio.gather(*connection.tasks, return_exceptions=True)
        finally:
            connection.abort()
            self._connections.discard(connection)

    def _late(self) -> tuple[bytes, float]:
        return self._late_marker, self._late_seconds

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        connection: _Connection,
        *,
        replies: bool,
        seen: Callable[[bytes], None] | None = None,
        late: Callable[[], tuple[bytes, float]] | None = None,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if seen is not None:
                    seen(data)
                if replies and connection.holding:
                    continue
                marker, seconds = late() if late is not None else (b"", 0.0)
                if marker and (at := data.find(marker)) >= 0:
                    sink.write(data[:at])
                    await sink.drain()
                    await asyncio.sleep(seconds)  # the fault injected, not a wait for anything
                    data = data[at:]
                sink.write(data)
                await sink.drain()
        connection.abort()  # one side ended: so does the other, as with a real network path
