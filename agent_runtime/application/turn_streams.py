"""Following a turn's chunks: live from this process, else from what was persisted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from agent_runtime.application.live_turns import LiveTurns
from agent_runtime.application.ports import UnitOfWorkFactory
from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.errors import InvalidInput, NotFound
from agent_runtime.domain.model import validate_id, validate_session_id

MAX_CURSOR = 2**63  # what the database's integers hold


class TurnStreams:
    def __init__(
        self, uow_factory: UnitOfWorkFactory, live: LiveTurns, *, poll_seconds: float = 0.5
    ) -> None:
        self._uow_factory = uow_factory
        self._live = live
        # A turn another process runs is followed through its commits, this often.
        self._poll_seconds = poll_seconds

    async def follow(
        self, session_id: str, turn_id: str, after_seq: int
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
            live = self._live.get(turn_id)
            if live is not None:
                if live.session_id != session_id:
                    raise _turn_not_found(session_id, turn_id)
                async for chunk in live.follow(sent):
                    yield chunk
                return
            async with self._uow_factory() as uow:
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
            await asyncio.sleep(self._poll_seconds)


def _turn_not_found(session_id: str, turn_id: str) -> NotFound:
    return NotFound(
        f"turn {turn_id} not found in session {session_id}",
        reason="TURN_NOT_FOUND",
        metadata={"turn_id": turn_id},
    )
