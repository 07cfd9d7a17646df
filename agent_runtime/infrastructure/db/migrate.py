"""Applying the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

_MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock key ("migrate"): replicas starting together migrate one at a time.
_MIGRATION_LOCK_KEY = 0x6D696772617465


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there)."""

    def upgrade(connection: Connection) -> None:
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)

    async with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # SQLite rebuilds a table to change its keys; with foreign keys enforced, the
            # rebuild of a parent trips its children mid-way. SQLite's own recipe: turn them
            # off (only possible outside a transaction), rebuild, check, turn them back on.
            await connection.run_sync(_set_sqlite_foreign_keys, False)
        try:
            async with connection.begin():
                if connection.dialect.name == "postgresql":
                    # Held to the end of this transaction, which (PostgreSQL DDL being
                    # transactional) holds the whole upgrade: the next one in line then finds
                    # the schema current.
                    await connection.execute(
                        select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY))
                    )
                await connection.run_sync(upgrade)
        finally:
            if sqlite:
                await connection.run_sync(_set_sqlite_foreign_keys, True)


def _set_sqlite_foreign_keys(connection: Connection, enabled: bool) -> None:
    # On the driver's connection: through SQLAlchemy the statement would open a transaction,
    # inside which SQLite ignores this pragma.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")


def head_revision() -> str | None:
    """The newest revision the shipped migrations know."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The database's revision (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


async def schema_is_current(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        return await connection.run_sync(current_revision) == head_revision()
