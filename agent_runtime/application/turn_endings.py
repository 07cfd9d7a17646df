"""TurnEndings: what a turn that did not end normally records, and why: a failure (the model
endpoint, the database, a bug), CancelTurn, the client gone, the deadline or shutdown. What
the turn left uncommitted is undone first; the text the model streamed is kept as an
incomplete message, and the turn ends FAILED (Error, TurnCompleted{ERROR}) or CANCELLED
(TurnCompleted{CANCELLED}). The TurnHandler commits it through the RPC's unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent_runtime.application.ids import IdFactory
from agent_runtime.application.live_turns import LiveTurn
from agent_runtime.application.model_step import TurnInterrupted
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain.errors import DomainError, InternalError, ModelTimeout

log = logging.getLogger(__name__)


class TurnEndings:
    def __init__(self, ids: IdFactory) -> None:
        self._ids = ids

    async def record(self, turn: TurnRecorder, live: LiveTurn, stopped: BaseException) -> None:
        """Record the end of a turn that `stopped` (an exception) cut short, in place of
        whatever it left uncommitted."""
        with contextlib.suppress(DomainError):  # a broken database refuses even this
            await turn.roll_back()
        error = self._error(turn, live, stopped)
        if error is None:
            await turn.cancel()
        else:
            await turn.fail(error)

    def _error(
        self, turn: TurnRecorder, live: LiveTurn, stopped: BaseException
    ) -> DomainError | None:
        """Why the turn failed; None: it was cancelled."""
        if isinstance(stopped, TurnInterrupted | asyncio.CancelledError | GeneratorExit):
            if live.timed_out and not live.cancel_requested:
                return ModelTimeout(
                    f"the turn ran longer than {live.deadline_seconds:g}s", reason="TURN_TIMEOUT"
                )
            return None  # CancelTurn, the client gone, or shutdown
        if isinstance(stopped, DomainError):
            return stopped
        # A bug: logged with an error id; the client is told the id, never the details.
        error_id = self._ids("err")
        log.error(
            "turn %s failed unexpectedly (error id %s)",
            turn.turn.turn_id,
            error_id,
            exc_info=stopped,
            extra={"error_id": error_id},
        )
        return InternalError(
            f"internal error (error id {error_id})", metadata={"error_id": error_id}
        )
