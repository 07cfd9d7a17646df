"""The SQLite writer's fast path (sqlite_hot_statements.py) writes and reads exactly what
SQLAlchemy's own path does: the same scenario of repository calls runs on two real SQLite
files, once with the marked statements on the fast path and once with every statement
through `Connection.execute`, and both the answers and every stored byte must match."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Executable, insert, select
from sqlalchemy.exc import IntegrityError

from agent_runtime.domain.approval import Approval, ApprovalStatus
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.model import (
    Message,
    Role,
    Session,
    StopReason,
    ToolCallRecord,
    Turn,
    Usage,
)
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db import (
    approval_repository,
    message_repository,
    session_repository,
    turn_repository,
)
from agent_runtime.infrastructure.db.engine import create_engine, create_sqlite_writer_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.sqlite_hot_statements import HotStatements, Plan, hot
from agent_runtime.infrastructure.db.tables import turns
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory

# Naive and non-UTC times too: UTCDateTime must treat them alike on both paths.
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
LATER = datetime(2026, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2026, 5, 1, 12, 45)

# What a StreamMessage turn runs on the writer: these must take the fast path.
TURN_STATEMENTS = {
    "_GET_SESSION": session_repository._GET_SESSION,
    "_CLAIM_SESSION": session_repository._CLAIM_SESSION,
    "_UPDATE_SESSION": session_repository._UPDATE_SESSION,
    "_RELEASE_AND_COUNT": session_repository._RELEASE_AND_COUNT,
    "_INSERT_TURN": turn_repository._INSERT_TURN,
    "_END_TURN": turn_repository._END_TURN,
    "_INSERT_MESSAGE": message_repository._INSERT_MESSAGE,
    "_RECENT_MESSAGES": message_repository._RECENT_MESSAGES,
}


async def _scenario(uows: SqlAlchemyUnitOfWorkFactory) -> list[Any]:
    """Repository calls touching every marked statement; what each answered."""
    answers: list[Any] = []
    async with uows(TENANT) as uow:
        await uow.sessions.add(
            Session(
                "s1",
                "coder",
                NOW,
                NAIVE,
                title="a title \x00 with NUL",
                instructions="be brief",
                generation=GenerationConfig.from_dict({"temperature": 0.5}),
            )
        )
        await uow.commit()
    async with uows(TENANT) as uow:
        answers.append(await uow.sessions.get("s1"))
        answers.append(await uow.sessions.claim_turn("s1", "t1"))
        answers.append(await uow.sessions.claim_turn("s1", "t2"))  # held: reads running_turn
        turn = Turn("t1", "s1", "coder", "m", LATER, client_message_id="c1", owner="me")
        await uow.turns.add(turn, [])
        answers.append(await uow.turns.get("t1"))
        answers.append(await uow.turns.find_by_client_message_id("s1", "c1"))
        answers.append(await uow.turns.chunks(turn))
        await uow.messages.add(Message("m1", "s1", 1, Role.USER, "hi \x00", NOW, turn_id="t1"))
        call = ToolCallRecord("call-1", "shell", {"cmd": "ls"})
        await uow.messages.add(
            Message(
                "m2",
                "s1",
                2,
                Role.ASSISTANT,
                "",
                NAIVE,
                turn_id="t1",
                tool_calls=(call,),
                incomplete=True,
                reasoning="thinking",
            )
        )
        await uow.messages.add(
            Message("m3", "s1", 3, Role.TOOL, "out", LATER, tool_call_id="call-1", is_error=True)
        )
        answers.append(await uow.messages.recent("s1", 10))
        answers.append(await uow.messages.get("s1", "m2"))
        answers.append(await uow.messages.last_user_message("s1"))
        answers.append(await uow.messages.find_tool_call("s1", "call-1"))
        answers.append(await uow.messages.find_tool_result("s1", "call-1"))
        approval = Approval(
            "a1", "s1", "call-1", "m2", "t1", "shell", {"cmd": "ls"}, "risky", NOW, LATER
        )
        await uow.approvals.add(approval)
        approval.status = ApprovalStatus.APPROVED
        approval.decided_at = NAIVE
        await uow.approvals.save(approval)
        answers.append(await uow.approvals.get("s1", "call-1"))
        answers.append(await uow.approvals.grants("s1"))
        await uow.sessions.record_activity("s1", LATER, message_count=3)
        await uow.events.add(Event(EventType.TURN_STARTED, "s1", NOW, "t1", {"a": 1}))
        await uow.events.add(Event(EventType.MESSAGE_PERSISTED, "s1", NAIVE, "t1"))
        await uow.commit()
    async with uows(TENANT) as uow:
        turn.complete(StopReason.END_TURN, Usage(7, 11), LATER)
        answers.append(await uow.turns.end(turn, []))
        answers.append(await uow.turns.end(turn, []))  # no longer running: 0 rows
        await uow.turns.save(turn)
        await uow.turns.request_cancel("t1")
        answers.append(await uow.messages.supersede_from("s1", 2, "t1"))
        await uow.sessions.release_turn(
            "s1", "t1", LATER, message_count=3, count_usage=Usage(7, 11)
        )
        await uow.sessions.release_turn("s1", "t9", NOW)  # another turn's: stays
        await uow.usage.count_turn("2026-05-01", Usage(7, 11))
        await uow.usage.count_turn("2026-05-01", Usage(1, 2))  # the upsert's update
        await uow.sessions.update_settings(Session("s1", "coder", NOW, NOW, title="new"))
        answers.append(await uow.sessions.get("s1"))
        answers.append(await uow.turns.get("t1"))
        answers.append(await uow.messages.recent("s1", 2))
        await uow.commit()
    return answers


def _dump(db_file: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db_file) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: [
                tuple((type(value).__name__, value) for value in found)
                for found in connection.execute(f"SELECT * FROM {table} ORDER BY rowid")
            ]
            for table in tables
        }


async def _run(db_file: Path) -> list[Any]:
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    await upgrade_to_head(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        return await _scenario(factory)
    finally:
        await factory.close()
        await engine.dispose()


async def test_the_fast_path_stores_and_answers_exactly_what_sqlalchemy_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: dict[int, Plan] = {}
    plan_of = HotStatements.plan

    def recording(self: HotStatements, statement: Executable, params: Any) -> Plan | None:
        plan = plan_of(self, statement, params)
        if plan is not None:
            planned[id(statement)] = plan
        return plan

    monkeypatch.setattr(HotStatements, "plan", recording)
    fast = await _run(tmp_path / "fast.db")
    monkeypatch.setattr(HotStatements, "plan", lambda *_: None)
    normal = await _run(tmp_path / "normal.db")

    assert fast == normal
    assert _dump(tmp_path / "fast.db") == _dump(tmp_path / "normal.db")
    not_planned = [name for name, s in TURN_STATEMENTS.items() if id(s) not in planned]
    assert not_planned == []


@asynccontextmanager
async def _writer_after_scenario(tmp_path: Path) -> AsyncIterator[Connection]:
    """A writer connection to a database the scenario has filled."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'runtime.db'}")
    await upgrade_to_head(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        await _scenario(factory)
        writer_engine = create_sqlite_writer_engine(engine.url)
        connection = writer_engine.connect()
        try:
            yield connection
        finally:
            connection.close()
            writer_engine.dispose()
    finally:
        await factory.close()
        await engine.dispose()


async def test_rows_have_the_values_and_types_sqlalchemy_gives(tmp_path: Path) -> None:
    async with _writer_after_scenario(tmp_path) as connection:
        statements = HotStatements(connection.dialect)
        reads: list[tuple[Executable, dict[str, Any]]] = [
            (session_repository._GET_SESSION, {"key_tenant": TENANT, "key_session": "s1"}),
            (turn_repository._GET_TURN, {"key_tenant": TENANT, "key_turn": "t1"}),
            (
                message_repository._RECENT_MESSAGES,
                {"key_tenant": TENANT, "key_session": "s1", "key_limit": 10},
            ),
            (
                approval_repository._GET_APPROVAL,
                {"key_tenant": TENANT, "key_session": "s1", "key_call": "call-1"},
            ),
        ]
        for statement, params in reads:
            plan = statements.plan(statement, params)
            assert plan is not None
            fast = plan.run(connection.connection.driver_connection, params).all()
            normal = connection.execute(statement, params).all()
            assert [tuple(r) for r in fast] == [tuple(r) for r in normal]
            assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in normal]
            assert [r._fields for r in fast] == [r._fields for r in normal]
            connection.rollback()


def test_what_it_cannot_reproduce_stays_on_sqlalchemy() -> None:
    from sqlalchemy.dialects import sqlite

    statements = HotStatements(sqlite.dialect())
    unmarked = select(turns).where(turns.c.turn_id == "t1")
    assert statements.plan(unmarked, None) is None
    returning = hot(insert(turns).returning(turns.c.turn_id))
    assert statements.plan(returning, {"turn_id": "t1"}) is None
    expanding = hot(select(turns).where(turns.c.turn_id.in_(["a", "b"])))
    assert statements.plan(expanding, None) is None
    computed = hot(select(turns.c.prompt_tokens + 1))
    assert statements.plan(computed, None) is None
    # a required parameter not given: SQLAlchemy raises its own error
    assert statements.plan(turn_repository._GET_TURN, {"key_tenant": TENANT}) is None


async def test_driver_errors_come_out_as_sqlalchemy_errors(tmp_path: Path) -> None:
    async with _writer_after_scenario(tmp_path) as connection:
        values = {
            "turn_id": "t1",
            "tenant_id": TENANT,
            "session_id": "s1",
            "agent": "coder",
            "model": "m",
            "status": "running",
            "started_at": NOW,
        }
        plan = HotStatements(connection.dialect).plan(turn_repository._INSERT_TURN, values)
        assert plan is not None
        with pytest.raises(IntegrityError):
            plan.run(connection.connection.driver_connection, values)
