"""TurnEndings: how a turn that did not end normally is recorded, in the RPC's own unit of
work: a failure (the model endpoint, the database, a bug), CancelTurn, the client gone,
the deadline or shutdown. The text the model streamed is kept as an incomplete message, the
session is freed, and the client (and every follower) gets the end of the turn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable

from agent_runtime.application.ids import IdFactory
from agent_runtime.application.live_turns import LiveTurn
from agent_runtime.application.ports import UnitOfWork
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import DomainError, InternalError, ModelTimeout

log = logging.getLogger(__name__)


class TurnEndings:
    def __init__(self, ids: IdFactory, turn_timeout: float | None) -> None:
        self._ids = ids
        self._turn_timeout = turn_timeout

    async def failed(
        self, uow: UnitOfWork, turn: TurnRecorder, error: DomainError
    ) -> list[chunks.Chunk]:
        """Error and TurnCompleted{ERROR}, after undoing what the failure left uncommitted."""
        with contextlib.suppress(DomainError):  # a broken database refuses even this
            await turn.roll_back()
        return await self._record(uow, turn, turn.fail(error))

    async def cancelled(self, uow: UnitOfWork, turn: TurnRecorder) -> list[chunks.Chunk]:
        """TurnCompleted{CANCELLED}: CancelTurn, or the client went away."""
        with contextlib.suppress(DomainError):
            await turn.roll_back()
        return await self._record(uow, turn, turn.cancel())

    async def interrupted(
        self, uow: UnitOfWork, turn: TurnRecorder, live: LiveTurn
    ) -> list[chunks.Chunk]:
        """CancelTurn, or the turn's deadline, stopped the model call."""
        if live.cancel_requested:
            return await self.cancelled(uow, turn)
        timeout = ModelTimeout(
            f"the turn ran longer than {self._turn_timeout:g}s", reason="TURN_TIMEOUT"
        )
        return await self.failed(uow, turn, timeout)

    async def crashed(
        self, uow: UnitOfWork, turn: TurnRecorder, exc: Exception
    ) -> list[chunks.Chunk]:
        """A bug: logged with an error id; the client is told the id, never the details."""
        error_id = self._ids("err")
        log.exception(
            "turn %s failed unexpectedly (error id %s)",
            turn.turn.turn_id,
            error_id,
            exc_info=exc,
            extra={"error_id": error_id},
        )
        internal = InternalError(
            f"internal error (error id {error_id})", metadata={"error_id": error_id}
        )
        return await self.failed(uow, turn, internal)

    async def _record(
        self, uow: UnitOfWork, turn: TurnRecorder, ending: Awaitable[None]
    ) -> list[chunks.Chunk]:
        """Commit the ending (`ending`: the recorder's fail() or cancel() call). If the
        database refuses, the client still gets the ending chunks, and the lease keeper
        reclaims the turn once the database is back."""
        try:
            await ending
            await turn.save()
            await uow.commit(on_committed=turn.committed)
        except DomainError as exc:
            log.error(
                "turn %s: could not record its end (%s); the lease keeper will reclaim it",
                turn.turn.turn_id,
                exc.reason,
            )
        return turn.chunks_to_send()
