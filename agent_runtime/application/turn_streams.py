"""Following a turn's chunks: live from this process, else from what was persisted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from agent_runtime.application.live_turns import LiveTurns
from agent_runtime.application.ports import EventSignal, UnitOfWorkFactory
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.errors import InvalidInput, NotFound
from agent_runtime.domain.model import validate_id, validate_session_id
from agent_runtime.domain.tenants import DEFAULT_TENANT

MAX_CURSOR = 2**63  # what the database's integers hold


class TurnStreams:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        live: LiveTurns,
        *,
        commits: EventSignal | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self._uow_factory = uow_factory
        self._live = live
        # A turn another process runs is followed through its commits: read again when a
        # commit is signalled (every commit of a turn writes events), at the latest this often.
        self._commits = commits or _NoSignal()
        self._poll_seconds = poll_seconds

    async def follow(
        self, session_id: str, turn_id: str, after_seq: int, *, tenant_id: str = DEFAULT_TENANT
    ) -> AsyncGenerator[Chunk, None]:
        """Every chunk after `after_seq`, then live until the turn ends.

        A finished turn is replayed from its persisted log (TurnStarted, agent switches, the
        final message or tool call, errors and the completion, with their original seq);
        deltas exist only while the turn runs here.
        """
        validate_session_id(session_id)
        validate_id("turn_id", turn_id)
        if not 0 <= after_seq < MAX_CURSOR:
            raise InvalidInput.field("after_seq", f"must be from 0 to {MAX_CURSOR - 1}")
        sent = after_seq
        while True:
            generation = self._commits.generation()
            live = self._live.get(turn_id)
            if live is not None:
                if live.session_id != session_id or live.tenant_id != tenant_id:
                    raise _turn_not_found(session_id, turn_id)
                async for chunk in live.follow(sent):
                    yield chunk
                return
            async with self._uow_factory(tenant_id) as uow:
                turn = await uow.turns.get(turn_id)
                if turn is None or turn.session_id != session_id:
                    raise _turn_not_found(session_id, turn_id)
                log = await uow.turns.chunks(turn)
            for chunk in log:
                if chunk.seq > sent:
                    sent = chunk.seq
                    yield chunk
            if not turn.running:
                return
            await self._commits.wait(generation, self._poll_seconds)


class _NoSignal:
    """No wake-ups: waiting is polling."""

    def generation(self) -> int:
        return 0

    async def wait(self, after_generation: int, max_wait: float) -> None:
        await asyncio.sleep(max_wait)


def _turn_not_found(session_id: str, turn_id: str) -> NotFound:
    return NotFound(
        f"turn {turn_id} not found in session {session_id}",
        reason="TURN_NOT_FOUND",
        metadata={"turn_id": turn_id},
    )
