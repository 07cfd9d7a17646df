"""Following a turn's chunks: live from this process, else from what was persisted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from agent_runtime.application.chunk_relay import ChunkRelay, NoChunkRelay, RelayedChunks
from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.ports import CommitScope, EventSignal
from agent_runtime.application.session_lookup import live_session
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.chunks import Chunk, TurnCompleted
from agent_runtime.domain.errors import InvalidInput, NotFound
from agent_runtime.domain.model import Turn, validate_id, validate_session_id

MAX_CURSOR = 2**63  # what the database's integers hold


class TurnStreams:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        registry: LiveTurnRegistry,
        *,
        commits: EventSignal | None = None,
        poll_seconds: float = 0.5,
        relay: ChunkRelay | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._registry = registry
        self._relay = relay or NoChunkRelay()
        # A turn another process runs is followed through its commits: read again when a
        # commit of the turn is signalled (every commit of a turn writes events of the turn),
        # at the latest this often.
        self._commits = commits or _NoSignal()
        self._poll_seconds = poll_seconds

    async def follow(
        self, session_id: str, turn_id: str, after_seq: int, *, tenant_id: str
    ) -> AsyncGenerator[Chunk, None]:
        """Every chunk after `after_seq`, then live until the turn ends.

        A turn running here is followed from its live buffer. Any other turn is followed
        from its persisted log (TurnStarted, agent switches, the final message or tool call,
        errors and the completion, with their original seq), merged with what the chunk
        relay brings from the replica that runs it (deltas too, when a relay is configured).
        """
        validate_session_id(session_id)
        validate_id("turn_id", turn_id)
        if not 0 <= after_seq < MAX_CURSOR:
            raise InvalidInput.field("after_seq", f"must be from 0 to {MAX_CURSOR - 1}")
        live = self._registry.get(turn_id)
        if live is not None:
            if live.session_id != session_id or live.tenant_id != tenant_id:
                raise _turn_not_found(session_id, turn_id)
            async for chunk in live.follow(after_seq):
                yield chunk
            return
        turn, log = await self._read_log(session_id, turn_id, tenant_id)
        if not turn.running:
            # Finished: the log is all there is (retries and late resumes end here, with no
            # relay subscription to set up and tear down).
            for chunk in log:
                if chunk.seq > after_seq:
                    yield chunk
            return
        # Subscribed before the log is read again: whatever is committed after that read is
        # relayed.
        async with self._relay.subscribe(tenant_id, session_id, turn_id) as relayed:
            async for chunk in self._merged(session_id, turn_id, after_seq, tenant_id, relayed):
                yield chunk

    async def _merged(
        self,
        session_id: str,
        turn_id: str,
        after_seq: int,
        tenant_id: str,
        relayed: RelayedChunks,
    ) -> AsyncGenerator[Chunk, None]:
        """Persisted and relayed chunks, each once, in seq order, until the turn ends."""
        sent = after_seq
        held: Chunk | None = None  # relayed after a gap: waits for the log to fill the gap
        scope = CommitScope(tenant_id, session_id, turn_id)
        while True:
            generation = self._commits.generation()
            turn, log = await self._read_log(session_id, turn_id, tenant_id)
            if held is not None:
                log = sorted([*log, held], key=_seq)
                held = None
            for chunk in log:
                if chunk.seq > sent:
                    sent = chunk.seq
                    yield chunk
                    if isinstance(chunk.body, TurnCompleted):
                        return
            if not turn.running:
                return
            # Relayed chunks that follow on are sent at once; a gap (a chunk the relay
            # missed) or a commit elsewhere (or the polling interval) means reading again.
            while (next_chunk := await self._next_relayed(relayed, generation, scope)) is not None:
                if next_chunk.seq <= sent:
                    continue
                if next_chunk.seq > sent + 1:
                    held = next_chunk
                    break
                sent = next_chunk.seq
                yield next_chunk
                if isinstance(next_chunk.body, TurnCompleted):
                    return

    async def _read_log(
        self, session_id: str, turn_id: str, tenant_id: str
    ) -> tuple[Turn, list[Chunk]]:
        async with self._uow_factory.reader(tenant_id) as uow:
            turn = await uow.turns.get(turn_id)
            if turn is None or turn.session_id != session_id:
                raise _turn_not_found(session_id, turn_id)
            if not turn.running:  # a deleted session's turns (all finished) are not served
                await live_session(uow, session_id)
            return turn, await uow.turns.chunks(turn)

    async def _next_relayed(
        self, relayed: RelayedChunks, generation: int, scope: CommitScope
    ) -> Chunk | None:
        """The next relayed chunk, or None once a commit of the turn is signalled or the poll
        is due."""
        if (chunk := relayed.take()) is not None:
            return chunk
        arrival = asyncio.ensure_future(relayed.arrival())
        commit = asyncio.ensure_future(self._commits.wait(generation, self._poll_seconds, scope))
        try:
            await asyncio.wait((arrival, commit), return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrival.cancel()
            commit.cancel()
        if commit.done() and not commit.cancelled():
            return None  # a chunk that came meanwhile stays there to take
        return relayed.take()


class _NoSignal:
    """No wake-ups: waiting is polling."""

    def generation(self) -> int:
        return 0

    async def wait(self, after_generation: int, max_wait: float, scope: CommitScope) -> None:
        await asyncio.sleep(max_wait)


def _turn_not_found(session_id: str, turn_id: str) -> NotFound:
    return NotFound(
        f"turn {turn_id} not found in session {session_id}",
        reason="TURN_NOT_FOUND",
        metadata={"turn_id": turn_id},
    )


def _seq(chunk: Chunk) -> int:
    return chunk.seq
