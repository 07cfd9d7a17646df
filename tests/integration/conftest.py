from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory
from tests.support.databases import BACKENDS
from tests.support.migrated_databases import migrated_database_for


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated database, once per backend."""
    async with migrated_database_for(request.param, str(tmp_path / "runtime.db")) as url:
        engine = create_engine(url)
        yield engine
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_database_for("sqlite", str(tmp_path / "runtime.db")) as url:
        engine = create_engine(url)
        yield engine
        await engine.dispose()


@pytest.fixture
async def db_file(tmp_path: Path) -> AsyncIterator[Path]:
    """A migrated SQLite file."""
    path = tmp_path / "runtime.db"
    async with migrated_database_for("sqlite", str(path)):
        yield path


@pytest.fixture
async def uows(db_file: Path) -> AsyncIterator[SqlAlchemyUnitOfWorkFactory]:
    """Units of work on db_file, through the process's SQLite writer."""
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    yield factory
    await factory.close()
    await engine.dispose()


@pytest.fixture
async def tiny_disk_uows(tiny_disk: Path) -> AsyncIterator[SqlAlchemyUnitOfWorkFactory]:
    """Units of work on a migrated SQLite file, tiny_disk / "runtime.db", on a tiny disk the
    test can fill."""
    engine = create_engine(f"sqlite+aiosqlite:///{tiny_disk / 'runtime.db'}")
    await upgrade_to_head(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    yield factory
    await factory.close()
    await engine.dispose()


def rows_in(db_file: Path, sql: str) -> list[tuple[object, ...]]:
    """What another connection (another process, after a crash) finds in the file."""
    with sqlite3.connect(db_file) as connection:
        return list(connection.execute(sql))
