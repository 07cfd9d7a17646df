"""Relaying a running turn's chunks to followers on other replicas (ResumeStream, retries).

The database carries what a turn commits; token deltas are never persisted. A relay carries
every chunk the running replica streams, so a follower elsewhere also sees the deltas. It is
best effort: a chunk lost on the way is filled from the persisted log if it was committed,
and a lost delta is simply missing (the final message carries its text).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from agent_runtime.domain.chunks import Chunk


class RelayedChunks(Protocol):
    """Chunks of one turn received from the relay, in arrival order."""

    def take(self) -> Chunk | None:
        """The oldest chunk received and not yet taken, or None (never waits)."""
        ...

    async def arrival(self) -> None:
        """Return once there is a chunk to take."""
        ...


class TurnPublisher(Protocol):
    """Where one turn this process runs sends its chunks."""

    def publish(self, chunk: Chunk) -> None:
        """Send a chunk of the turn. Never waits and never raises: a turn must not slow down
        or fail because of its followers."""
        ...


class ChunkRelay(Protocol):
    def publisher(self, tenant_id: str, session_id: str, turn_id: str) -> TurnPublisher:
        """The publisher of a turn this process runs, made once per turn: whatever is the
        same for all of the turn's chunks (its subject, its ids) is worked out here."""
        ...

    def subscribe(
        self, tenant_id: str, session_id: str, turn_id: str
    ) -> AbstractAsyncContextManager[RelayedChunks]:
        """Receive the turn's chunks from now on, until the context exits."""
        ...


class NoChunkRelay:
    """The default: nothing is relayed; followers elsewhere see only committed chunks."""

    def publisher(self, tenant_id: str, session_id: str, turn_id: str) -> TurnPublisher:
        return _NOT_PUBLISHED

    @asynccontextmanager
    async def subscribe(
        self, tenant_id: str, session_id: str, turn_id: str
    ) -> AsyncIterator[RelayedChunks]:
        yield _NothingRelayed()


class _NotPublished:
    def publish(self, chunk: Chunk) -> None:
        pass


_NOT_PUBLISHED = _NotPublished()


class _NothingRelayed:
    def take(self) -> Chunk | None:
        return None

    async def arrival(self) -> None:
        await asyncio.Event().wait()  # never
