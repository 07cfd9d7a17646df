"""Turns as resources: GetTurn and ListTurns, tenant-scoped like everything else."""

from __future__ import annotations

from agent_runtime.application import pagination
from agent_runtime.application.commands import ListTurns
from agent_runtime.application.pagination import Page
from agent_runtime.application.session_lookup import live_session
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.errors import NotFound
from agent_runtime.domain.model import Turn, validate_id, validate_session_id

_TURNS_TOKEN = "trn"


class TurnQueries:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def get(self, session_id: str, turn_id: str, *, tenant_id: str) -> Turn:
        validate_session_id(session_id)
        validate_id("turn_id", turn_id)
        async with self._uow_factory.reader(tenant_id) as uow:
            await live_session(uow, session_id)
            turn = await uow.turns.get(turn_id)
        if turn is None or turn.session_id != session_id:
            raise NotFound(
                f"turn {turn_id} not found in session {session_id}",
                reason="TURN_NOT_FOUND",
                metadata={"turn_id": turn_id},
            )
        return turn

    async def list(self, query: ListTurns) -> Page[Turn]:
        """Oldest first; a page token is the (start, id) of the page's last turn."""
        validate_session_id(query.session_id)
        limit = pagination.page_size(query.page_size)
        after = pagination.decode_time_key_token(query.page_token, _TURNS_TOKEN)
        async with self._uow_factory.reader(query.tenant_id) as uow:
            await live_session(uow, query.session_id)
            rows = await uow.turns.page(query.session_id, after, limit + 1)
        return Page.of(rows, limit, _after_turn)


def _after_turn(turn: Turn) -> str:
    return pagination.encode_time_key_token(_TURNS_TOKEN, turn.started_at, turn.turn_id)
