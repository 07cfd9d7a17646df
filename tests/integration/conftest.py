from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'runtime.db'}")
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()
