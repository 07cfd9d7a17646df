from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from tests.support.databases import BACKENDS, database_for


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated database, once per backend."""
    async with database_for(request.param, str(tmp_path / "runtime.db")) as url:
        engine = create_engine(url)
        await upgrade_to_head(engine)
        yield engine
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'runtime.db'}")
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()
