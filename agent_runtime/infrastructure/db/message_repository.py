"""SqlAlchemyMessageRepository: a session's messages, in position order."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    bindparam,
    insert,
    select,
    update,
)

from agent_runtime.domain.model import (
    Message,
    Role,
    ToolCallRecord,
)
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import (
    messages,
)

# Messages of one session of the tenant: key_tenant, key_session.
_SESSION_MESSAGES = (
    messages.c.tenant_id == bindparam("key_tenant"),
    messages.c.session_id == bindparam("key_session"),
)
_VISIBLE = messages.c.superseded_by_turn_id.is_(None)  # what the model sees
_INSERT_MESSAGE = hot(insert(messages))
_RECENT_MESSAGES = hot(
    select(messages)
    .where(*_SESSION_MESSAGES, _VISIBLE)
    .order_by(messages.c.position.desc())
    .limit(bindparam("key_limit"))
)
_GET_MESSAGE = hot(
    select(messages).where(*_SESSION_MESSAGES, messages.c.message_id == bindparam("key_message"))
)
_LAST_USER_MESSAGE = hot(
    select(messages)
    .where(*_SESSION_MESSAGES, _VISIBLE, messages.c.role == Role.USER.value)
    .order_by(messages.c.position.desc())
    .limit(1)
)
_SUPERSEDE = hot(
    update(messages)
    .where(*_SESSION_MESSAGES, _VISIBLE, messages.c.position >= bindparam("key_position"))
    .values(superseded_by_turn_id=bindparam("key_turn"))
)
_TOOL_CALL_MESSAGE = hot(
    select(messages).where(
        *_SESSION_MESSAGES, messages.c.requested_call_id == bindparam("key_call")
    )
)
_TOOL_RESULT_MESSAGE = hot(
    select(messages).where(*_SESSION_MESSAGES, messages.c.tool_call_id == bindparam("key_call"))
)


class SqlAlchemyMessageRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, message: Message) -> None:
        call = message.requested_call
        await self._db.execute(
            _INSERT_MESSAGE,
            row(
                messages,
                tenant_id=self._tenant,
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
                is_error=message.is_error,
                requested_call_id=call.call_id if call else None,
                reasoning=message.reasoning or None,
            ),
        )

    async def recent(self, session_id: str, limit: int) -> list[Message]:
        key = {**self._key(session_id), "key_limit": limit}
        rows = (await self._db.execute(_RECENT_MESSAGES, key)).all()
        return [_message_from_row(found) for found in reversed(rows)]

    async def page(
        self,
        session_id: str,
        after_position: int,
        limit: int,
        *,
        include_superseded: bool = False,
    ) -> list[Message]:
        query = select(messages).where(
            *self._session(session_id), messages.c.position > after_position
        )
        if not include_superseded:
            query = query.where(_VISIBLE)
        rows = (await self._db.execute(query.order_by(messages.c.position).limit(limit))).all()
        return [_message_from_row(found) for found in rows]

    async def get(self, session_id: str, message_id: str) -> Message | None:
        key = {**self._key(session_id), "key_message": message_id}
        found = (await self._db.execute(_GET_MESSAGE, key)).first()
        return None if found is None else _message_from_row(found)

    async def last_user_message(self, session_id: str) -> Message | None:
        found = (await self._db.execute(_LAST_USER_MESSAGE, self._key(session_id))).first()
        return None if found is None else _message_from_row(found)

    async def supersede_from(self, session_id: str, position: int, turn_id: str) -> int:
        key = {**self._key(session_id), "key_position": position, "key_turn": turn_id}
        result: CursorResult[Any] = await self._db.execute(_SUPERSEDE, key)
        return int(result.rowcount)

    async def find_tool_call(self, session_id: str, call_id: str) -> Message | None:
        key = {**self._key(session_id), "key_call": call_id}
        found = (await self._db.execute(_TOOL_CALL_MESSAGE, key)).first()
        return None if found is None else _message_from_row(found)

    async def find_tool_result(self, session_id: str, call_id: str) -> Message | None:
        key = {**self._key(session_id), "key_call": call_id}
        found = (await self._db.execute(_TOOL_RESULT_MESSAGE, key)).first()
        return None if found is None else _message_from_row(found)

    async def replace_tool_call(self, message_id: str, call: ToolCallRecord) -> None:
        await self._db.execute(
            update(messages)
            .where(messages.c.tenant_id == self._tenant, messages.c.message_id == message_id)
            .values(tool_calls=_tool_calls_json((call,)), requested_call_id=call.call_id)
        )

    def _session(self, session_id: str) -> tuple[ColumnElement[bool], ...]:
        return (messages.c.tenant_id == self._tenant, messages.c.session_id == session_id)

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_session": session_id}


def _tool_calls_json(calls: tuple[ToolCallRecord, ...]) -> str | None:
    if not calls:
        return None
    return json.dumps(
        [{"call_id": c.call_id, "tool_name": c.tool_name, "arguments": c.arguments} for c in calls]
    )


def _message_from_row(found: Row[Any]) -> Message:
    # Most messages have no tool calls: no JSON to parse (this runs for every history row).
    calls = (
        tuple(
            ToolCallRecord(c["call_id"], c["tool_name"], c["arguments"])
            for c in json.loads(found.tool_calls)
        )
        if found.tool_calls
        else ()
    )
    return Message(
        message_id=found.message_id,
        session_id=found.session_id,
        position=found.position,
        role=Role(found.role),
        content=found.content,
        created_at=found.created_at,
        turn_id=found.turn_id,
        tool_calls=calls,
        tool_call_id=found.tool_call_id,
        incomplete=bool(found.incomplete),
        is_error=bool(found.is_error),
        reasoning=found.reasoning or "",
        superseded_by_turn_id=found.superseded_by_turn_id,
    )
