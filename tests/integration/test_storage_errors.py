"""PostgreSQL failures reach the use cases as StorageUnavailable (UNAVAILABLE to clients),
and a broken connection does not outlive its unit of work."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.domain.model import Session
from agent_runtime.domain.tenants import DEFAULT_TENANT
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import database_for, postgres_admin_url

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_a_refused_postgresql_connection_is_storage_unavailable() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/test")  # nothing listens there
    try:
        async with SqlAlchemyUnitOfWorkFactory(engine)(DEFAULT_TENANT) as uow:
            with pytest.raises(StorageUnavailable) as caught:
                await uow.sessions.get("s1")
        assert caught.value.retryable
        assert "ConnectionRefusedError" in caught.value.message
    finally:
        await engine.dispose()


async def test_a_connection_killed_mid_transaction_fails_that_unit_of_work_only(
    tmp_path: Path,
) -> None:
    async with database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engine = create_engine(url)
        admin_url = make_url(postgres_admin_url()).set(drivername="postgresql")
        admin = await asyncpg.connect(admin_url.render_as_string(False))
        try:
            await upgrade_to_head(engine)
            uows = SqlAlchemyUnitOfWorkFactory(engine)
            async with uows(DEFAULT_TENANT) as uow:
                await uow.sessions.add(Session("s1", "coder", NOW, NOW))
                # The server goes away under an open transaction (restart, failover, admin).
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    make_url(url).username,
                )
                with pytest.raises(StorageUnavailable):
                    await uow.commit()
            async with uows(
                DEFAULT_TENANT
            ) as uow:  # a fresh connection: the pool checks before use
                assert await uow.sessions.get("s1") is None
                await uow.sessions.add(Session("s1", "coder", NOW, NOW))
                await uow.commit()
            async with uows(DEFAULT_TENANT) as uow:
                assert await uow.sessions.get("s1") is not None
        finally:
            await admin.close()
            await engine.dispose()
