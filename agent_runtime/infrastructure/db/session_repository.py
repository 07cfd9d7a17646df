"""SqlAlchemySessionRepository: sessions and their agent switches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CursorResult,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)

from agent_runtime.domain.model import (
    AgentSwitch,
    Session,
    Usage,
)
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.session_rows import (
    activity_values,
    session_from_row,
    settings_row,
    switch_from_row,
)
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import (
    agent_switches,
    sessions,
)

# A claim that finds the session freed between its UPDATE and its SELECT tries again.
_CLAIM_ATTEMPTS = 3

# One session of the tenant: key_tenant, key_session.
_THE_SESSION = (
    sessions.c.tenant_id == bindparam("key_tenant"),
    sessions.c.session_id == bindparam("key_session"),
)
_GET_SESSION = hot(select(sessions).where(*_THE_SESSION))
_INSERT_SESSION = hot(insert(sessions))
_UPDATE_SESSION = hot(update(sessions).where(*_THE_SESSION))  # SET: the columns given
_CLAIM_SESSION = hot(
    update(sessions)
    .where(*_THE_SESSION, sessions.c.running_turn_id.is_(None))
    .values(running_turn_id=bindparam("key_turn"))
)
_RUNNING_TURN = hot(select(sessions.c.running_turn_id).where(*_THE_SESSION))
# Frees the session only if turn key_turn still holds it; SET also the other columns given.
_RELEASED = case(
    (sessions.c.running_turn_id == bindparam("key_turn"), None),
    else_=sessions.c.running_turn_id,
)
_RELEASE_SESSION = hot(update(sessions).where(*_THE_SESSION).values(running_turn_id=_RELEASED))
# The same, for the commit that ends a turn: its tokens are added to the session's totals.
_RELEASE_AND_COUNT = hot(
    update(sessions)
    .where(*_THE_SESSION)
    .values(
        running_turn_id=_RELEASED,
        prompt_tokens=sessions.c.prompt_tokens + bindparam("add_prompt", type_=BigInteger),
        completion_tokens=sessions.c.completion_tokens
        + bindparam("add_completion", type_=BigInteger),
        counted_turns=sessions.c.counted_turns + 1,
    )
)


class SqlAlchemySessionRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def get(self, session_id: str) -> Session | None:
        found = (await self._db.execute(_GET_SESSION, self._key(session_id))).first()
        return None if found is None else session_from_row(found)

    async def add(self, session: Session) -> None:
        await self._db.execute(
            _INSERT_SESSION,
            row(
                sessions,
                tenant_id=self._tenant,
                session_id=session.session_id,
                agent=session.agent,
                title=session.title,
                message_count=session.message_count,
                running_turn_id=session.running_turn_id,
                created_at=session.created_at,
                last_activity_at=session.last_activity_at,
                **settings_row(session),
            ),
        )

    async def update_settings(self, session: Session) -> None:
        values = row(sessions, title=session.title, **settings_row(session))
        await self._db.execute(_UPDATE_SESSION, {**values, **self._key(session.session_id)})

    async def claim_turn(self, session_id: str, turn_id: str) -> str | None:
        running = None
        for _ in range(_CLAIM_ATTEMPTS):
            result: CursorResult[Any] = await self._db.execute(
                _CLAIM_SESSION, {**self._key(session_id), "key_turn": turn_id}
            )
            if result.rowcount == 1:
                return None
            running = await self._db.scalar(_RUNNING_TURN, self._key(session_id))
            if running:
                return str(running)
            # PostgreSQL (READ COMMITTED): the running turn ended between the two statements.
        return str(running or "")

    async def record_activity(
        self, session_id: str, at: datetime, *, message_count: int | None = None
    ) -> None:
        values = activity_values(at, message_count)
        await self._db.execute(_UPDATE_SESSION, {**values, **self._key(session_id)})

    async def release_turn(
        self,
        session_id: str,
        turn_id: str,
        at: datetime,
        *,
        message_count: int | None = None,
        count_usage: Usage | None = None,
    ) -> None:
        values = {
            **activity_values(at, message_count),
            **self._key(session_id),
            "key_turn": turn_id,
        }
        if count_usage is None:
            await self._db.execute(_RELEASE_SESSION, values)
            return
        # One statement: free the session and count the turn's tokens in its totals.
        count = {
            "add_prompt": count_usage.prompt_tokens,
            "add_completion": count_usage.completion_tokens,
        }
        await self._db.execute(_RELEASE_AND_COUNT, {**values, **count})

    async def switch_agent(self, session_id: str, switch: AgentSwitch) -> None:
        values = row(sessions, agent=switch.to_agent)
        await self._db.execute(_UPDATE_SESSION, {**values, **self._key(session_id)})
        await self._db.execute(
            insert(agent_switches).values(
                tenant_id=self._tenant,
                session_id=session_id,
                from_agent=switch.from_agent,
                to_agent=switch.to_agent,
                reason=switch.reason,
                turn_id=switch.turn_id,
                switched_at=switch.switched_at,
            )
        )

    async def recent_agent_switches(
        self, session_id: str, limit: int
    ) -> tuple[list[AgentSwitch], int]:
        return (await self.recent_agent_switches_of([session_id], limit))[session_id]

    async def recent_agent_switches_of(
        self, session_ids: Sequence[str], limit: int
    ) -> dict[str, tuple[list[AgentSwitch], int]]:
        if not session_ids:
            return {}
        recent: dict[str, list[AgentSwitch]] = {session_id: [] for session_id in session_ids}
        counts = dict.fromkeys(recent, 0)
        # Each switch numbered from the session's newest, beside the session's count: the
        # newest `limit` of every session, and every session's count, in one read. (A
        # session's first row is kept even when limit is 0: it carries the count.)
        of_session = agent_switches.c.session_id
        ranked = (
            select(
                agent_switches,
                func.row_number()
                .over(partition_by=of_session, order_by=agent_switches.c.switch_id.desc())
                .label("newness"),
                func.count().over(partition_by=of_session).label("switch_count"),
            )
            .where(agent_switches.c.tenant_id == self._tenant, of_session.in_(list(recent)))
            .subquery()
        )
        rows = await self._db.execute(
            select(ranked)
            .where(ranked.c.newness <= max(limit, 1))
            .order_by(ranked.c.session_id, ranked.c.switch_id)
        )
        for found in rows.all():
            counts[found.session_id] = found.switch_count
            if found.newness <= limit:
                recent[found.session_id].append(switch_from_row(found))
        return {session_id: (recent[session_id], counts[session_id]) for session_id in recent}

    async def agent_switches(self, session_id: str, after_id: int, limit: int) -> list[AgentSwitch]:
        query = (
            select(agent_switches)
            .where(*_switches_of(self._tenant, session_id), agent_switches.c.switch_id > after_id)
            .order_by(agent_switches.c.switch_id)
            .limit(limit)
        )
        return [switch_from_row(r) for r in (await self._db.execute(query)).all()]

    async def mark_deleted(self, session_id: str, at: datetime) -> None:
        values = row(sessions, deleted_at=at)
        await self._db.execute(_UPDATE_SESSION, {**values, **self._key(session_id)})

    async def page_by_activity(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        query = select(sessions).where(
            sessions.c.tenant_id == self._tenant, sessions.c.deleted_at.is_(None)
        )
        if after is not None:
            at, key = after
            query = query.where(
                or_(
                    sessions.c.last_activity_at < at,
                    and_(sessions.c.last_activity_at == at, sessions.c.session_id < key),
                )
            )
        query = query.order_by(
            sessions.c.last_activity_at.desc(), sessions.c.session_id.desc()
        ).limit(limit)
        return [session_from_row(found) for found in (await self._db.execute(query)).all()]

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"key_tenant": self._tenant, "key_session": session_id}


def _switches_of(tenant_id: str, session_id: str) -> tuple[ColumnElement[bool], ...]:
    return (agent_switches.c.tenant_id == tenant_id, agent_switches.c.session_id == session_id)
