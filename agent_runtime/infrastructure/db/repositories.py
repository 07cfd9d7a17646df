"""Repositories: domain objects in, domain objects out, SQL in between.

Each statement runs at once on the unit of work's AsyncSession (Core, not ORM
unit-of-work flushing), so what is written and when is visible in the code.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_runtime.domain.model import (
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    TurnError,
    TurnStatus,
    Usage,
)
from agent_runtime.infrastructure.db.tables import messages, sessions, turns


class SqlAlchemySessionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, session_id: str) -> Session | None:
        row = (
            await self._db.execute(select(sessions).where(sessions.c.session_id == session_id))
        ).first()
        return None if row is None else _session_from_row(row)

    async def add(self, session: Session) -> None:
        await self._db.execute(
            insert(sessions).values(
                session_id=session.session_id,
                agent=session.agent,
                title=session.title,
                message_count=session.message_count,
                running_turn_id=session.running_turn_id,
                created_at=session.created_at,
                last_activity_at=session.last_activity_at,
            )
        )

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        result: CursorResult[Any] = await self._db.execute(  # type: ignore[assignment]
            update(sessions)
            .where(sessions.c.session_id == session_id, sessions.c.running_turn_id.is_(None))
            .values(running_turn_id=turn_id)
        )
        if result.rowcount == 1:
            return None
        running = await self._db.scalar(
            select(sessions.c.running_turn_id).where(sessions.c.session_id == session_id)
        )
        return str(running or "")

    async def record_activity(
        self,
        session_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        release_turn: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"last_activity_at": at}
        if message_count is not None:
            values["message_count"] = message_count
        await self._db.execute(
            update(sessions).where(sessions.c.session_id == session_id).values(**values)
        )
        if release_turn is not None:
            await self._db.execute(
                update(sessions)
                .where(
                    sessions.c.session_id == session_id, sessions.c.running_turn_id == release_turn
                )
                .values(running_turn_id=None)
            )


class SqlAlchemyTurnRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def add(self, turn: Turn) -> None:
        await self._db.execute(insert(turns).values(**_turn_values(turn)))

    async def get(self, turn_id: str) -> Turn | None:
        row = (await self._db.execute(select(turns).where(turns.c.turn_id == turn_id))).first()
        return None if row is None else _turn_from_row(row)

    async def save(self, turn: Turn) -> None:
        values = _turn_values(turn)
        del values["turn_id"]
        await self._db.execute(update(turns).where(turns.c.turn_id == turn.turn_id).values(values))

    async def interrupt_running(self) -> list[Turn]:
        rows = (
            await self._db.execute(select(turns).where(turns.c.status == TurnStatus.RUNNING.value))
        ).all()
        interrupted = [_turn_from_row(row) for row in rows]
        for turn in interrupted:
            await self._db.execute(
                update(turns)
                .where(turns.c.turn_id == turn.turn_id)
                .values(status=TurnStatus.INTERRUPTED.value)
            )
            await self._db.execute(
                update(sessions)
                .where(
                    sessions.c.session_id == turn.session_id,
                    sessions.c.running_turn_id == turn.turn_id,
                )
                .values(running_turn_id=None)
            )
            turn.status = TurnStatus.INTERRUPTED
        return interrupted


class SqlAlchemyMessageRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def add(self, message: Message) -> None:
        await self._db.execute(
            insert(messages).values(
                message_id=message.message_id,
                session_id=message.session_id,
                position=message.position,
                role=message.role.value,
                content=message.content,
                tool_calls=_tool_calls_json(message.tool_calls),
                tool_call_id=message.tool_call_id,
                turn_id=message.turn_id,
                incomplete=message.incomplete,
                created_at=message.created_at,
            )
        )

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        rows = (
            await self._db.execute(
                select(messages)
                .where(messages.c.session_id == session_id)
                .order_by(messages.c.position.desc())
                .limit(limit)
            )
        ).all()
        return [_message_from_row(row) for row in reversed(rows)]

    async def page(self, session_id: str, after_position: int, limit: int) -> list[Message]:
        rows = (
            await self._db.execute(
                select(messages)
                .where(messages.c.session_id == session_id, messages.c.position > after_position)
                .order_by(messages.c.position)
                .limit(limit)
            )
        ).all()
        return [_message_from_row(row) for row in rows]


# -- row <-> domain mapping ---------------------------------------------------------------


def _session_from_row(row: Row[Any]) -> Session:
    return Session(
        session_id=row.session_id,
        agent=row.agent,
        title=row.title,
        message_count=row.message_count,
        running_turn_id=row.running_turn_id,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
    )


def _turn_values(turn: Turn) -> dict[str, Any]:
    return {
        "turn_id": turn.turn_id,
        "session_id": turn.session_id,
        "agent": turn.agent,
        "model": turn.model,
        "status": turn.status.value,
        "stop_reason": turn.stop_reason.value if turn.stop_reason else None,
        "input_message_id": turn.input_message_id,
        "client_message_id": turn.client_message_id,
        "prompt_tokens": turn.usage.prompt_tokens,
        "completion_tokens": turn.usage.completion_tokens,
        "error_reason": turn.error.reason if turn.error else None,
        "error_message": turn.error.message if turn.error else None,
        "started_at": turn.started_at,
        "finished_at": turn.finished_at,
    }


def _turn_from_row(row: Row[Any]) -> Turn:
    return Turn(
        turn_id=row.turn_id,
        session_id=row.session_id,
        agent=row.agent,
        model=row.model,
        started_at=row.started_at,
        input_message_id=row.input_message_id,
        client_message_id=row.client_message_id,
        status=TurnStatus(row.status),
        stop_reason=StopReason(row.stop_reason) if row.stop_reason else None,
        usage=Usage(row.prompt_tokens, row.completion_tokens),
        error=TurnError(row.error_reason, row.error_message or "") if row.error_reason else None,
        finished_at=row.finished_at,
    )


def _tool_calls_json(calls: tuple[ToolCallRecord, ...]) -> str | None:
    if not calls:
        return None
    return json.dumps(
        [{"call_id": c.call_id, "tool_name": c.tool_name, "arguments": c.arguments} for c in calls]
    )


def _message_from_row(row: Row[Any]) -> Message:
    calls = tuple(
        ToolCallRecord(c["call_id"], c["tool_name"], c["arguments"])
        for c in json.loads(row.tool_calls or "[]")
    )
    return Message(
        message_id=row.message_id,
        session_id=row.session_id,
        position=row.position,
        role=Role(row.role),
        content=row.content,
        created_at=row.created_at,
        turn_id=row.turn_id,
        tool_calls=calls,
        tool_call_id=row.tool_call_id,
        incomplete=bool(row.incomplete),
    )
