"""Tenants in the SQLite store: migration 0004 on existing data, and one id in two tenants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import Message, Role, Session, Turn, TurnStatus
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db import migrate
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import BACKENDS, database_for, migrate_to

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rows_from_before_tenants_belong_to_the_default_tenant(
    backend: str, tmp_path: Path
) -> None:
    async with database_for(backend, str(tmp_path / "old.db")) as url:
        await _check_rows_from_before_tenants(create_engine(url))


async def _check_rows_from_before_tenants(engine: AsyncEngine) -> None:
    try:
        async with engine.begin() as connection:
            await migrate_to(connection, "0003")
            for statement in (
                "INSERT INTO sessions VALUES ('s1', 'coder', 'old', 1, NULL, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00', NULL)",
                "INSERT INTO turns (turn_id, session_id, agent, model, status, prompt_tokens, "
                "completion_tokens, started_at) VALUES ('t1', 's1', 'coder', 'm', 'completed', "
                "0, 0, '2026-01-01 00:00:00')",
                "INSERT INTO messages (message_id, session_id, position, role, content, "
                "incomplete, created_at) VALUES ('m1', 's1', 1, 'user', 'hi', false, "
                "'2026-01-01 00:00:00')",
                "INSERT INTO events (type, session_id, data, occurred_at) "
                "VALUES ('turn_started', 's1', '{}', '2026-01-01 00:00:00')",
            ):
                await connection.exec_driver_sql(statement)
        await migrate.upgrade_to_head(engine)
        assert await migrate.schema_is_current(engine)

        uows = SqlAlchemyUnitOfWorkFactory(engine)
        async with uows(DEFAULT_TENANT) as uow:
            session = await uow.sessions.get("s1")
            assert session is not None and session.title == "old"
            assert [m.content for m in await uow.messages.recent("s1", 10)] == ["hi"]
            assert (turn := await uow.turns.get("t1")) is not None and turn.session_id == "s1"
            assert await uow.events.last_id() == 1
        async with uows("tenant-b") as uow:
            assert await uow.sessions.get("s1") is None
            assert await uow.turns.get("t1") is None
            assert await uow.messages.recent("s1", 10) == []
            assert await uow.events.last_id() == 0
    finally:
        await engine.dispose()


async def test_two_tenants_hold_the_same_session_id_side_by_side(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    for tenant in ("tenant-a", "tenant-b"):
        async with uows(tenant) as uow:
            await uow.sessions.add(Session("same", "coder", NOW, NOW, title=tenant))
            # Position 1 in both: the per-session unique keys are per tenant too.
            await uow.messages.add(
                Message(f"m-{tenant}", "same", 1, Role.USER, f"hi from {tenant}", NOW)
            )
            await uow.events.add(Event(EventType.TURN_STARTED, "same", NOW, None, {}))
            await uow.commit()

    async with uows("tenant-a") as uow:
        assert await uow.sessions.claim_turn("same", "turn-a") is None
        await uow.turns.add(Turn("turn-a", "same", "coder", "m", NOW))
        await uow.commit()
    assert await uows.abandoned_turn_candidates(NOW, "") == [("tenant-a", "turn-a")]

    async with uows("tenant-b") as uow:
        session = await uow.sessions.get("same")
        assert session is not None and session.title == "tenant-b"
        assert session.running_turn_id is None  # A's claim is A's alone
        assert [m.content for m in await uow.messages.page("same", 0, 10)] == ["hi from tenant-b"]
        assert await uow.turns.get("turn-a") is None
        events = await uow.events.after(0, session_id="same", types=frozenset(), limit=10)
        assert len(events) == 1
        listed = await uow.sessions.page_by_activity(None, 10)
        assert [s.title for s in listed] == ["tenant-b"]


async def test_one_read_finds_abandoned_turn_candidates_across_tenants(engine: AsyncEngine) -> None:
    uows = SqlAlchemyUnitOfWorkFactory(engine)
    later, earlier = NOW + timedelta(seconds=30), NOW - timedelta(seconds=1)
    turns = {
        "tenant-a": [
            Turn(
                "a-expired", "s-expired", "coder", "m", NOW, owner="them", lease_expires_at=earlier
            ),
            Turn("a-healthy", "s-healthy", "coder", "m", NOW, owner="them", lease_expires_at=later),
        ],
        "tenant-b": [
            Turn("b-mine", "s-mine", "coder", "m", NOW, owner="me", lease_expires_at=later),
            Turn("b-healthy", "s-healthy", "coder", "m", NOW, owner="them", lease_expires_at=later),
            Turn(
                "b-finished",
                "s-finished",
                "coder",
                "m",
                NOW,
                status=TurnStatus.COMPLETED,
                owner="them",
                lease_expires_at=earlier,
            ),
        ],
        "tenant-c": [
            Turn("c-healthy", "s-healthy", "coder", "m", NOW, owner="them", lease_expires_at=later)
        ],
    }
    for tenant, its_turns in turns.items():
        async with uows(tenant) as uow:
            for turn in its_turns:
                await uow.sessions.add(Session(turn.session_id, "coder", NOW, NOW))
                await uow.turns.add(turn)
            await uow.commit()

    # Only what recovery must look at: tenant C, whose only turn is healthy, is not there.
    assert await uows.abandoned_turn_candidates(NOW, "me") == [
        ("tenant-a", "a-expired"),
        ("tenant-b", "b-mine"),
    ]
    assert await uows.abandoned_turn_candidates(NOW, "nobody") == [("tenant-a", "a-expired")]
