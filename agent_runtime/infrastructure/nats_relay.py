"""The chunk relay over NATS core pub/sub (AGENT_RUNTIME_NATS_URL).

The replica running a turn publishes every chunk it streams on the turn's subject,
`agent_runtime.turns.<tenant>.<turn>`; a follower on another replica subscribes to it.
Core NATS keeps nothing: a message nobody subscribes to is dropped by the server, so a
turn nobody follows costs one buffered publish per chunk, no round trip. The subject and
the JSON envelope of the turn's ids are worked out once per turn (`publisher`); per chunk
only the chunk is encoded. Why NATS for the deltas and LISTEN/NOTIFY for the commits:
docs/deployment.md.

Why every chunk is published even when nobody follows: core NATS tells a publisher nothing
about subscribers, so skipping would need the follower to announce itself to the running
replica (request/reply on a per-turn subject) and wait for its answer before reading the
persisted log. Without that wait a chunk published while the announcement is in flight is
lost to the follower, which breaks what a follower relies on (every chunk streamed after it
read the log reaches it); with it, every follow pays a round trip, every running turn holds
one more subscription, and a turn whose subscription has not yet reached the server answers
"no responders" as if it ran nowhere. All of that costs more than it saves: a publish is one
small JSON encode and a queue put on the event loop (the write is the client library's,
buffered), and with delta coalescing tokens that arrive together share one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agent_runtime.domain.chunks import Chunk
from agent_runtime.infrastructure.db.chunk_codec import decode_one, encode_one

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "agent_runtime.turns"
# Chunks waiting to be handed to the client library, and chunks received and not yet sent
# on by a follower. Beyond either, chunks are dropped: a follower then reads the committed
# ones from the database, and misses some deltas (the final message has their text).
MAX_OUTGOING = 10_000
MAX_RECEIVED = 10_000
# A subscription waits this long for the server to confirm it, so chunks published after
# the follower reads the persisted log reach it.
SUBSCRIBE_CONFIRM_SECONDS = 2.0
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_FAILURES = (nats.errors.Error, OSError, TimeoutError)


class RelayUnavailable(Exception):
    """The NATS server could not be reached at start-up."""


def subject_token(value: str) -> str:
    """An id as one subject token, one-to-one: letters, digits, '_' and '-' stay, every
    other byte becomes %XX, so '.', '*', '>' and spaces never reach the subject and two ids
    never share one."""
    if value and all(c in _SAFE for c in value):
        return value
    return "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in value.encode()) or "%"


def turn_subject(tenant_id: str, turn_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{subject_token(tenant_id)}.{subject_token(turn_id)}"


def redacted(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


class NatsChunkRelay:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._outgoing: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_OUTGOING)
        self._sender = asyncio.create_task(self._send_forever(), name="chunk-relay-sender")
        self._failing = False  # publishing fails right now (logged once per episode)
        self.dropped = 0  # chunks not relayed because the outgoing queue was full
        self.subscriptions = 0  # followers subscribed right now
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, within_seconds: float = 5.0) -> NatsChunkRelay:
        """Connect, or raise RelayUnavailable after `within_seconds`; later losses of the
        connection are logged and repaired by the client library."""
        events = _ConnectionEvents(redacted(url))
        client = Client()
        try:
            async with asyncio.timeout(within_seconds):
                await client.connect(
                    url,
                    name="agent-runtime",
                    connect_timeout=max(1, int(within_seconds)),
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,  # keep trying for as long as the process runs
                    error_cb=events.error,
                    disconnected_cb=events.disconnected,
                    reconnected_cb=events.reconnected,
                )
        except (*_FAILURES, ValueError) as exc:
            with contextlib.suppress(*_FAILURES):
                await client.close()
            raise RelayUnavailable(f"cannot connect to NATS at {redacted(url)}: {exc!r}") from None
        events.connected = True
        return cls(client)

    @property
    def connected(self) -> bool:
        return self._client.is_connected

    def publisher(self, tenant_id: str, session_id: str, turn_id: str) -> NatsTurnPublisher:
        return NatsTurnPublisher(self, tenant_id, session_id, turn_id)

    def _enqueue(self, subject: str, message: bytes) -> None:
        if self._closed:
            return
        try:
            self._outgoing.put_nowait((subject, message))
        except asyncio.QueueFull:
            self.dropped += 1

    @contextlib.asynccontextmanager
    async def subscribe(
        self, tenant_id: str, session_id: str, turn_id: str
    ) -> AsyncIterator[ReceivedChunks]:
        received = ReceivedChunks(tenant_id, session_id, turn_id)
        subscription: Subscription | None = None
        self.subscriptions += 1
        try:  # one finally for every way out, a follower cancelled while confirming included
            try:
                subscription = await self._client.subscribe(
                    turn_subject(tenant_id, turn_id), cb=received.on_message
                )
                if self._client.is_connected:
                    await self._confirm_commands_reached_server()
            except _FAILURES as exc:
                # Followed from the database alone: committed chunks, no deltas.
                log.warning("cannot subscribe to turn %s on NATS (%r)", turn_id, exc)
            yield received
        finally:
            self.subscriptions -= 1
            if subscription is not None:
                with contextlib.suppress(*_FAILURES):
                    await subscription.unsubscribe()

    async def _confirm_commands_reached_server(self) -> None:
        """Returns once the server has processed every command this connection sent so far
        (the SUB just made), or raises TimeoutError after SUBSCRIBE_CONFIRM_SECONDS.

        Not flush(): nats-py (2.16) writes its PING straight to the socket, ahead of commands
        still in its send buffer, so the PONG can come back before the server has the SUB,
        and a chunk published meanwhile is lost to this follower (a flaky test found it). A
        message to an inbox of our own goes through that buffer, behind the SUB: once it is
        back, the server has the SUB. It comes back because connect() leaves echo on (a
        connection receives its own messages), and needs publish and subscribe permission
        on _INBOX.> (docs/deployment.md)."""
        inbox = self._client.new_inbox()
        back = asyncio.Event()

        async def on_probe(_message: Msg) -> None:
            back.set()

        probe = await self._client.subscribe(inbox, cb=on_probe)
        try:
            await self._client.publish(inbox, b"")
            async with asyncio.timeout(SUBSCRIBE_CONFIRM_SECONDS):
                await back.wait()
        finally:
            with contextlib.suppress(*_FAILURES):
                await probe.unsubscribe()

    async def close(self, max_wait: float = 5.0) -> None:
        """Send what the last turns streamed, then drain and close the connection."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                await self._outgoing.join()
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        with contextlib.suppress(*_FAILURES):
            async with asyncio.timeout(max_wait):
                await self._client.drain()
        if not self._client.is_closed:
            with contextlib.suppress(*_FAILURES):
                await self._client.close()

    async def _send_forever(self) -> None:
        while True:
            subject, message = await self._outgoing.get()
            try:
                # Buffered by the client library (flushed by its own task), and kept in its
                # buffer while it reconnects, up to its limit.
                await self._client.publish(subject, message)
            except _FAILURES as exc:
                if not self._failing:
                    log.warning(
                        "cannot relay chunks over NATS (%r); followers elsewhere "
                        "get committed chunks only until it works again",
                        exc,
                    )
                self._failing = True
            else:
                self._failing = False
            finally:
                self._outgoing.task_done()


class NatsTurnPublisher:
    """One running turn's chunks onto its subject. The subject and the JSON envelope of the
    turn's ids are worked out once, here; per chunk only the chunk itself is encoded."""

    def __init__(self, relay: NatsChunkRelay, tenant_id: str, session_id: str, turn_id: str):
        self._relay = relay
        self.subject = turn_subject(tenant_id, turn_id)
        ids = json.dumps(
            {"tenant": tenant_id, "session": session_id, "turn": turn_id}, separators=(",", ":")
        )
        # '{"tenant":..,"session":..,"turn":..,"chunk":' + the chunk + '}'
        self._head = (ids[:-1] + ',"chunk":').encode()

    def publish(self, chunk: Chunk) -> None:
        body = json.dumps(encode_one(chunk), separators=(",", ":")).encode()
        self._relay._enqueue(self.subject, b"".join((self._head, body, b"}")))


class ReceivedChunks:
    """One follower's chunks of one turn, as they arrive."""

    def __init__(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        self._ids = (tenant_id, session_id, turn_id)
        self._chunks: deque[Chunk] = deque(maxlen=MAX_RECEIVED)
        self._arrived = asyncio.Event()

    def take(self) -> Chunk | None:
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        if not self._chunks:
            self._arrived.clear()
        return chunk

    async def arrival(self) -> None:
        await self._arrived.wait()

    async def on_message(self, message: Msg) -> None:
        try:
            payload: dict[str, Any] = json.loads(message.data)
            ids = (payload["tenant"], payload["session"], payload["turn"])
            if ids != self._ids:
                return  # not this turn's (subjects are per turn; this only guards them)
            chunk = decode_one(payload["chunk"], self._ids[1], self._ids[2])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed relayed chunk on %s (%r)", message.subject, exc)
            return
        self._chunks.append(chunk)
        self._arrived.set()


class _ConnectionEvents:
    """Logs what happens to the connection once it is up (not the attempts at start-up,
    which fail start-up as a whole)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.connected = False

    async def error(self, exc: Exception) -> None:
        if self.connected:
            log.warning("NATS at %s: %r", self.where, exc)

    async def disconnected(self) -> None:
        if self.connected:
            log.warning(
                "lost the NATS connection to %s; reconnecting. Meanwhile followers on "
                "other replicas get committed chunks only",
                self.where,
            )

    async def reconnected(self) -> None:
        log.info("reconnected to NATS at %s", self.where)
