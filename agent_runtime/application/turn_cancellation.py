"""TurnCanceller: CancelTurn. A turn running in this process is interrupted at once; one
running in another process is marked, and its owner acts on it at its next lease renewal
(turn_recovery.py)."""

from __future__ import annotations

from agent_runtime.application.live_turns import LiveTurnRegistry
from agent_runtime.application.session_lookup import live_session
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.errors import NotFound, PreconditionFailed
from agent_runtime.domain.model import validate_id, validate_session_id


class TurnCanceller:
    def __init__(self, uow_factory: UnitOfWorkFactory, registry: LiveTurnRegistry) -> None:
        self._uow_factory = uow_factory
        self._registry = registry

    async def cancel(self, session_id: str, turn_id: str, *, tenant_id: str) -> None:
        validate_session_id(session_id)
        validate_id("turn_id", turn_id)
        live = self._registry.get(turn_id)
        if live is not None and live.session_id == session_id and live.tenant_id == tenant_id:
            live.cancel()
            return
        async with self._uow_factory(tenant_id) as uow:
            turn = await uow.turns.get(turn_id)
            if turn is None or turn.session_id != session_id:
                raise NotFound(
                    f"turn {turn_id} not found in session {session_id}",
                    reason="TURN_NOT_FOUND",
                    metadata={"turn_id": turn_id},
                )
            if not turn.running:
                await live_session(uow, session_id)  # a deleted session's turns: NOT_FOUND
                raise PreconditionFailed(
                    f"turn {turn_id} is not running ({turn.status.value})",
                    reason="TURN_NOT_RUNNING",
                    metadata={"turn_id": turn_id, "status": turn.status.value},
                )
            await uow.turns.request_cancel(turn_id)
            await uow.commit()
