"""The databases tests run on: a SQLite file, or a scratch schema on a real PostgreSQL.

PostgreSQL runs when AGENT_RUNTIME_TEST_POSTGRES_URL names a server (CI sets it): each test
gets its own role and a schema of the same name, and the role's search_path is that schema
alone: every table lands there, and nothing another run (or a hand-made migration) left in
`public` is ever read; runs never collide, and the schema and role are dropped afterwards.
Without the variable the PostgreSQL variants skip, saying why; with it and no server, they
fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_runtime.infrastructure.db import migrate
from agent_runtime.infrastructure.db.engine import create_engine, normalise_database_url

POSTGRES_URL_VARIABLE = "AGENT_RUNTIME_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_admin_url() -> str:
    """The server to make scratch schemas on, or a skip saying how to get one."""
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if not url:
        pytest.skip(
            f"PostgreSQL variant: set {POSTGRES_URL_VARIABLE}="
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test to run it"
        )
    return url


def _dsn(url: str) -> str:
    """The URL as asyncpg's own connect() takes it (no SQLAlchemy driver suffix)."""
    return normalise_database_url(url).set(drivername="postgresql").render_as_string(False)


async def admin_connection(admin_url: str) -> asyncpg.Connection:
    """A connection as the server's admin, or a failure saying the server is not there."""
    try:
        return await asyncpg.connect(_dsn(admin_url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"{POSTGRES_URL_VARIABLE} is set but PostgreSQL is not reachable: {exc!r}")


@asynccontextmanager
async def scratch_postgres(admin_url: str, *, schema_script: str = "") -> AsyncIterator[str]:
    """A URL whose tables land in a fresh, private schema; dropped on exit. `schema_script`
    (SQL statements) runs first in that schema, as its role."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await admin_connection(admin_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        try:  # whatever fails from here, the role and its schema go
            await admin.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
            # Not the default ("$user", public): tables in public would be found and used.
            await admin.execute(f"ALTER ROLE {name} SET search_path = {name}")
            if schema_script:
                async with admin.transaction():
                    # LOCAL: both end with this transaction, the admin connection is unchanged.
                    await admin.execute(
                        f"SET LOCAL ROLE {name}; SET LOCAL search_path = {name};\n{schema_script}"
                    )
            yield (
                normalise_database_url(admin_url)
                .set(drivername="postgresql+asyncpg", username=name, password=None)
                .render_as_string(False)
            )
        finally:
            # FORCE: a test's server process may still hold a connection (e.g. after kill -9).
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
            )
            await admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            await admin.execute(f"DROP ROLE {name}")
    finally:
        await admin.close()


@asynccontextmanager
async def database_for(backend: str, sqlite_file: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    async with scratch_postgres(postgres_admin_url()) as url:
        yield url


async def query(database_url: str, sql: str, **params: Any) -> Sequence[tuple[Any, ...]]:
    """Rows of one read, on whichever backend: for tests that check what was stored."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(sql), params)
            return [tuple(row) for row in result.all()]
    finally:
        await engine.dispose()


async def migrate_to(connection: AsyncConnection, revision: str) -> None:
    """The schema as that revision left it: to put rows from before a later migration."""

    def upgrade(sync_connection: Connection) -> None:
        config = migrate._config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    await connection.run_sync(upgrade)


@asynccontextmanager
async def alembic_version_locked(engine: AsyncEngine) -> AsyncIterator[None]:
    """PostgreSQL: another connection holds an ACCESS EXCLUSIVE lock on alembic_version
    while the block runs, so every read of that table (the readiness check's) waits."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await transaction.rollback()
