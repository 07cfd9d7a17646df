"""Migration 0007 on existing data: the turns that ended before the upgrade are counted in
their sessions' usage and their tenants' days, as GetUsage (read from the turn rows) counts
them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text

from agent_runtime.domain.model import UsageTotals
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.domain.usage import UsageGroupBy
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.tables import UTCDateTime
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import BACKENDS, database_for, migrate_to, query

STARTED = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
DAY_1 = datetime(2026, 5, 1, 23, 59, tzinfo=UTC)
DAY_2 = datetime(2026, 5, 2, 0, 30, tzinfo=UTC)

_INSERT_SESSION = text(
    "INSERT INTO sessions (tenant_id, session_id, agent, title, message_count, created_at,"
    " last_activity_at) VALUES (:tenant, :session, 'coder', '', 2, :at, :at)"
).bindparams(bindparam("at", type_=UTCDateTime))
_INSERT_TURN = text(
    "INSERT INTO turns (turn_id, tenant_id, session_id, agent, model, status, prompt_tokens,"
    " completion_tokens, started_at, finished_at, chunks, owner, cancel_requested)"
    " VALUES (:turn, :tenant, :session, 'coder', 'm', :status, :prompt, :completion, :started,"
    " :finished, '[]', 'local', false)"
).bindparams(bindparam("started", type_=UTCDateTime), bindparam("finished", type_=UTCDateTime))
# (turn, tenant, session, status, prompt, completion, finished)
TURNS = [
    ("t1", DEFAULT_TENANT, "s1", "completed", 100, 20, DAY_1),
    ("t2", DEFAULT_TENANT, "s1", "failed", 10, 0, DAY_2),
    ("t3", DEFAULT_TENANT, "s1", "cancelled", 5, 5, DAY_2),
    ("t4", DEFAULT_TENANT, "s1", "interrupted", 7, 7, DAY_2),  # ended with no usage counted
    ("t5", DEFAULT_TENANT, "s1", "running", 3, 3, None),
    ("t6", "tenant-b", "s1", "completed", 1, 2, DAY_1),
]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_turns_ended_before_the_upgrade_count_in_session_and_daily_usage(
    backend: str, tmp_path: Path
) -> None:
    async with database_for(backend, str(tmp_path / "old.db")) as url:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await migrate_to(connection, "0006")
                for tenant, session in ((DEFAULT_TENANT, "s1"), (DEFAULT_TENANT, "s2")):
                    await connection.execute(
                        _INSERT_SESSION, {"tenant": tenant, "session": session, "at": STARTED}
                    )
                await connection.execute(
                    _INSERT_SESSION, {"tenant": "tenant-b", "session": "s1", "at": STARTED}
                )
                for turn, tenant, session, status, prompt, completion, finished in TURNS:
                    await connection.execute(
                        _INSERT_TURN,
                        {
                            "turn": turn,
                            "tenant": tenant,
                            "session": session,
                            "status": status,
                            "prompt": prompt,
                            "completion": completion,
                            "started": STARTED,
                            "finished": finished,
                        },
                    )
            await upgrade_to_head(engine)
            uows = SqlAlchemyUnitOfWorkFactory(engine)
            async with uows.reader(DEFAULT_TENANT) as uow:
                s1, s2 = await uow.sessions.get("s1"), await uow.sessions.get("s2")
                report = await uow.usage.report(None, None, UsageGroupBy.SESSION)
            async with uows.reader("tenant-b") as uow:
                other = await uow.sessions.get("s1")
            days = await query(
                url,
                "SELECT tenant_id, day, prompt_tokens, completion_tokens, turns"
                " FROM tenant_usage_days ORDER BY tenant_id, day",
            )
        finally:
            await engine.dispose()

    assert s1 is not None and s2 is not None and other is not None
    assert s1.usage == UsageTotals(115, 25, 3)
    assert [(g.key, g.usage) for g in report.groups] == [("s1", s1.usage)]  # GetUsage agrees
    assert s2.usage == UsageTotals()
    assert other.usage == UsageTotals(1, 2, 1)
    assert days == [
        (DEFAULT_TENANT, "2026-05-01", 100, 20, 1),
        (DEFAULT_TENANT, "2026-05-02", 15, 5, 2),
        ("tenant-b", "2026-05-01", 1, 2, 1),
    ]
