"""SqlAlchemyTurnRepository: turns, their replay logs and leases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    and_,
    bindparam,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import ReturningUpdate

from agent_runtime.domain.chunks import Chunk
from agent_runtime.domain.model import (
    StopReason,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
)
from agent_runtime.infrastructure.db import chunk_codec
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import (
    sessions,
    turns,
)

# One turn of the tenant: key_tenant, key_turn.
_THE_TURN = (turns.c.tenant_id == bindparam("key_tenant"), turns.c.turn_id == bindparam("key_turn"))
_INSERT_TURN = hot(insert(turns))
_GET_TURN = hot(select(turns).where(*_THE_TURN))
_UPDATE_TURN = hot(update(turns).where(*_THE_TURN))  # SET: the columns given
_END_TURN = hot(update(turns).where(*_THE_TURN, turns.c.status == TurnStatus.RUNNING.value))
# The columns of a turn's row that its insert sets once and for all.
_FIXED_AT_INSERT = ("turn_id", "session_id", "client_message_id", "input_hash", "started_at")
_TURN_CHUNKS = hot(select(turns.c.chunks).where(*_THE_TURN))
_TURN_BY_CLIENT_MESSAGE_ID = hot(
    select(turns).where(
        turns.c.tenant_id == bindparam("key_tenant"),
        turns.c.session_id == bindparam("key_session"),
        turns.c.client_message_id == bindparam("key_client_message_id"),
    )
)


class SqlAlchemyTurnRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        await self._db.execute(
            _INSERT_TURN,
            {
                **_turn_values(turn),
                **row(turns, tenant_id=self._tenant, chunks=chunk_codec.encode(log or [])),
            },
        )

    async def get(self, turn_id: str) -> Turn | None:
        found = (await self._db.execute(_GET_TURN, self._key(turn_id))).first()
        return None if found is None else _turn_from_row(found)

    async def save(self, turn: Turn, log: list[Chunk] | None = None) -> None:
        await self._db.execute(_UPDATE_TURN, self._update(turn, log))

    async def end(self, turn: Turn, log: list[Chunk]) -> bool:
        # Conditional: on PostgreSQL a concurrent reclaim's commit is waited for, and then
        # the turn is found no longer running.
        result: CursorResult[Any] = await self._db.execute(_END_TURN, self._update(turn, log))
        return result.rowcount == 1

    def _update(self, turn: Turn, log: list[Chunk] | None) -> dict[str, Any]:
        values = _turn_values(turn)
        # Set at insert, never changed: left out of the SET, so that SQLite does not rewrite
        # the indexes on them (each turn's end would otherwise update every index on turns).
        for fixed in _FIXED_AT_INSERT:
            del values[fixed]
        if log is not None:
            values.update(row(turns, chunks=chunk_codec.encode(log)))
        return {**values, **self._key(turn.turn_id)}

    async def find_by_client_message_id(
        self, session_id: str, client_message_id: str
    ) -> Turn | None:
        key = {
            "key_tenant": self._tenant,
            "key_session": session_id,
            "key_client_message_id": client_message_id,
        }
        found = (await self._db.execute(_TURN_BY_CLIENT_MESSAGE_ID, key)).first()
        return None if found is None else _turn_from_row(found)

    async def page(
        self, session_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Turn]:
        query = select(turns).where(
            turns.c.tenant_id == self._tenant, turns.c.session_id == session_id
        )
        if after is not None:
            at, key = after
            query = query.where(
                or_(
                    turns.c.started_at > at,
                    and_(turns.c.started_at == at, turns.c.turn_id > key),
                )
            )
        query = query.order_by(turns.c.started_at, turns.c.turn_id).limit(limit)
        return [_turn_from_row(found) for found in (await self._db.execute(query)).all()]

    async def chunks(self, turn: Turn) -> list[Chunk]:
        raw = await self._db.scalar(_TURN_CHUNKS, self._key(turn.turn_id))
        return chunk_codec.decode(raw or "[]", turn.session_id, turn.turn_id)

    async def request_cancel(self, turn_id: str) -> None:
        values = row(turns, cancel_requested=True)
        await self._db.execute(_UPDATE_TURN, {**values, **self._key(turn_id)})

    async def abandoned_candidates(self, now: datetime, owner: str) -> list[Turn]:
        rows = (
            await self._db.execute(
                select(turns).where(
                    turns.c.tenant_id == self._tenant, *abandoned_turn_candidates(now, owner)
                )
            )
        ).all()
        return [_turn_from_row(found) for found in rows]

    async def interrupt(self, candidates: list[Turn], now: datetime) -> list[Turn]:
        interrupted = []
        for turn in candidates:
            # Conditional: of two processes reclaiming the same turn, one wins (on PostgreSQL
            # the second waits for the first and then finds the turn no longer running).
            result: CursorResult[Any] = await self._db.execute(
                update(turns)
                .where(*self._turn(turn.turn_id), turns.c.status == TurnStatus.RUNNING.value)
                .values(status=TurnStatus.INTERRUPTED.value, finished_at=now)
            )
            if result.rowcount != 1:
                continue
            await self._db.execute(
                update(sessions)
                .where(
                    sessions.c.tenant_id == self._tenant,
                    sessions.c.session_id == turn.session_id,
                    sessions.c.running_turn_id == turn.turn_id,
                )
                .values(running_turn_id=None)
            )
            turn.status = TurnStatus.INTERRUPTED
            interrupted.append(turn)
        return interrupted

    def _turn(self, turn_id: str) -> tuple[ColumnElement[bool], ...]:
        return (turns.c.tenant_id == self._tenant, turns.c.turn_id == turn_id)

    def _key(self, turn_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_turn": turn_id}


def _turn_values(turn: Turn) -> dict[str, Any]:
    return row(
        turns,
        turn_id=turn.turn_id,
        session_id=turn.session_id,
        agent=turn.agent,
        model=turn.model,
        status=turn.status.value,
        stop_reason=turn.stop_reason.value if turn.stop_reason else None,
        input_message_id=turn.input_message_id,
        client_message_id=turn.client_message_id,
        prompt_tokens=turn.usage.prompt_tokens,
        completion_tokens=turn.usage.completion_tokens,
        error_reason=turn.error.reason if turn.error else None,
        error_message=turn.error.message if turn.error else None,
        started_at=turn.started_at,
        finished_at=turn.finished_at,
        input_hash=turn.input_hash,
        owner=turn.owner,
        lease_expires_at=turn.lease_expires_at,
        model_calls=turn.model_calls,
        tool_calls=turn.tool_calls,
        first_token_ms=turn.first_token_ms,
    )


def _turn_from_row(found: Row[Any]) -> Turn:
    return Turn(
        turn_id=found.turn_id,
        session_id=found.session_id,
        agent=found.agent,
        model=found.model,
        started_at=found.started_at,
        input_message_id=found.input_message_id,
        client_message_id=found.client_message_id,
        status=TurnStatus(found.status),
        stop_reason=StopReason(found.stop_reason) if found.stop_reason else None,
        usage=Usage(found.prompt_tokens, found.completion_tokens),
        error=TurnError(found.error_reason, found.error_message or "")
        if found.error_reason
        else None,
        finished_at=found.finished_at,
        input_hash=found.input_hash,
        owner=found.owner,
        lease_expires_at=found.lease_expires_at,
        model_calls=found.model_calls,
        tool_calls=found.tool_calls,
        first_token_ms=found.first_token_ms,
    )


def renew_leases(
    running: Sequence[tuple[str, str]], owner: str, until: datetime
) -> ReturningUpdate[tuple[str, str, bool]]:
    """Extends the leases of these (tenant_id, turn_id) turns, if they still run and `owner`
    runs them, across tenants; returns (tenant_id, turn_id, cancel_requested) of each."""
    return (
        update(turns)
        .where(
            tuple_(turns.c.tenant_id, turns.c.turn_id).in_(list(running)),
            turns.c.owner == owner,
            turns.c.status == TurnStatus.RUNNING.value,
        )
        .values(lease_expires_at=until)
        .returning(turns.c.tenant_id, turns.c.turn_id, turns.c.cancel_requested)
    )


def abandoned_turn_candidates(now: datetime, owner: str) -> tuple[ColumnElement[bool], ...]:
    """Running turns whose lease expired at `now`, or that `owner` runs (or ran before a
    restart): what recovery looks at. Narrow it by tenant, or read it across tenants."""
    return (
        turns.c.status == TurnStatus.RUNNING.value,
        or_(turns.c.lease_expires_at < now, turns.c.owner == owner),
    )
