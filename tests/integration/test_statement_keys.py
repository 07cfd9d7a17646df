"""The prebuilt INSERTs and UPDATEs of repositories.py take their values from the keys they
are executed with, and SQLAlchemy would quietly drop a key that names no column: a
misspelt key would leave its column unwritten. Every INSERT and UPDATE fails instead, as it
is compiled, on a key it does not take; here every call site of a prebuilt one runs, on a
real SQLite file and a real PostgreSQL, so a misspelt key at any of them fails this test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert, Update

from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import (
    AgentSwitch,
    Approval,
    ApprovalStatus,
    Message,
    Role,
    Session,
    ToolCallRecord,
    Turn,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db import repositories
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.unit_of_work import (
    SqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWorkFactory,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

PREBUILT = {
    name: statement
    for name, statement in vars(repositories).items()
    if isinstance(statement, Insert | Update)
}


@pytest.mark.parametrize("driver", ["sqlite+aiosqlite", "postgresql+asyncpg"])
@pytest.mark.parametrize("name", sorted(PREBUILT))
def test_a_prebuilt_statement_refuses_a_key_it_does_not_take(name: str, driver: str) -> None:
    dialect = create_async_engine(f"{driver}://").dialect  # never connects
    statement = PREBUILT[name]
    keys = [column.key for column in statement.table.primary_key]
    statement.compile(dialect=dialect, column_keys=keys)  # keys it takes
    with pytest.raises(CompileError, match="'titel'"):
        statement.compile(dialect=dialect, column_keys=[*keys, "titel"])


class _Recording:
    """A unit of work's database that notes every statement it runs."""

    def __init__(self, db: Database, executed: list[Any]) -> None:
        self._db = db
        self._executed = executed

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._executed.append(statement)
        return await self._db.execute(statement, *args, **kwargs)

    async def scalar(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._executed.append(statement)
        return await self._db.scalar(statement, *args, **kwargs)

    async def scalars(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._executed.append(statement)
        return await self._db.scalars(statement, *args, **kwargs)

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        await self._db.commit(on_committed)

    async def rollback(self) -> None:
        await self._db.rollback()

    async def close(self) -> None:
        await self._db.close()


async def test_every_call_site_of_a_prebuilt_insert_or_update_passes_only_keys_it_takes(
    engine: AsyncEngine,
) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    executed: list[Any] = []
    uow = SqlAlchemyUnitOfWork(
        lambda: _Recording(uows._open_database(), executed),
        uows.signal,
        TENANT,
        postgresql=engine.dialect.name == "postgresql",
    )
    call = ToolCallRecord("c1", "shell", {"cmd": "ls"})
    turn = Turn("t1", "s1", "coder", "m", NOW, owner="here", lease_expires_at=NOW)
    approval = Approval.open("a1", "s1", "m1", "t1", call, "risky", NOW, timedelta(minutes=5))
    try:
        async with uow:
            sessions, turns, messages, approvals = (
                uow.sessions,
                uow.turns,
                uow.messages,
                uow.approvals,
            )
            await sessions.add(Session("s1", "coder", NOW, NOW, title="t"))
            await sessions.claim_turn("s1", "t1")
            await turns.add(turn)
            await turns.save(turn)
            await turns.save(turn, [])
            await turns.save_chunks(turn, [])
            await turns.request_cancel("t1")
            await messages.add(Message("m1", "s1", 1, Role.ASSISTANT, "", NOW, "t1", (call,)))
            await approvals.add(approval)
            approval.close(ApprovalStatus.EDITED, NOW, feedback="ok", final_arguments={})
            await approvals.save(approval)
            await sessions.switch_agent("s1", AgentSwitch("coder", "writer", "r", NOW, "t1"))
            await sessions.record_activity("s1", NOW)
            await sessions.record_activity("s1", NOW, message_count=1)
            await sessions.record_activity("s1", NOW, release_turn="t1")
            await sessions.record_activity("s1", NOW, message_count=1, release_turn="t1")
            await sessions.mark_deleted("s1", NOW)
            await uow.events.add(Event(EventType.TURN_STARTED, "s1", NOW, "t1"))
            await uow.commit()
    finally:
        await uows.close()
    # Every prebuilt INSERT and UPDATE was run: a new one needs its call sites above.
    ran = {name for name, statement in PREBUILT.items() if any(s is statement for s in executed)}
    assert ran == PREBUILT.keys()
