"""Databases at the newest schema revision, copied from a template: each test process runs
the migrations once per backend, and every later test gets a copy.

Why: a migration from nothing costs about 0.2 s (SQLite rebuilds tables; PostgreSQL runs
about 90 DDL statements, one round trip each), and some 700 tests start a runtime on a
fresh database. Most of them need the schema at head, not the way there.

- SQLite: the template is a migrated file, copied with SQLite's backup API.
- PostgreSQL: the template is the DDL the migrations ran, recorded once and replayed as one
  script into the test's scratch schema, as its role (so the test owns its tables, as if it
  had migrated). The reads a migration makes (reflection) are not replayed; a write with
  bound parameters cannot be replayed as a script, and is refused here, loudly.

tests/integration/test_migrated_databases.py checks that a copy has the schema a migration
from nothing gives. The tests of the migrations themselves (test_schema, test_usage_upgrade,
the CLI's migrate, servers migrating together) start from `database_for`'s empty database,
as do a few that migrate their own (each of them a test or two).
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from tests.support.databases import postgres_admin_url, scratch_postgres


@dataclass
class _Templates:
    """Per test process (each xdist worker makes its own), by the first test that asks."""

    sqlite_file: Path | None = None
    postgres_script: str | None = None


_templates = _Templates()


@asynccontextmanager
async def migrated_database_for(backend: str, sqlite_file: str) -> AsyncIterator[str]:
    """Like databases.database_for, with the schema already at head."""
    if backend == "sqlite":
        _copy_sqlite(await _sqlite_template(), Path(sqlite_file))
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    admin_url = postgres_admin_url()
    async with scratch_postgres(admin_url, schema_script=await _postgres_script()) as url:
        yield url


async def _sqlite_template() -> Path:
    if _templates.sqlite_file is None:
        directory = tempfile.mkdtemp(prefix="agent-runtime-template-")
        atexit.register(shutil.rmtree, directory, True)
        path = Path(directory) / "template.db"
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        _templates.sqlite_file = path
    return _templates.sqlite_file


def _copy_sqlite(template: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The backup API, not a file copy: it copies a consistent database whatever the
    # template's journal holds.
    with (
        closing(sqlite3.connect(template)) as source,
        closing(sqlite3.connect(destination)) as target,
    ):
        source.backup(target)


async def _postgres_script() -> str:
    if _templates.postgres_script is None:
        _templates.postgres_script = await _record_migration(postgres_admin_url())
    return _templates.postgres_script


def _is_read(statement: str) -> bool:
    """The reads a migration makes: Alembic's reflection of the catalogue and of its own
    version table, and the migration lock (held by the transaction the script runs in)."""
    sql = statement.lstrip()
    return sql.upper().startswith("SELECT") and any(
        marker in sql for marker in ("pg_catalog.", "pg_advisory_xact_lock", "alembic_version")
    )


async def _record_migration(admin_url: str) -> str:
    """The statements a migration from nothing writes with, as one script."""
    writes: list[str] = []

    def record(
        connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if _is_read(statement):
            return
        if statement.lstrip().upper().startswith("SELECT"):
            raise RuntimeError(
                f"a migration ran a SELECT that is not a catalogue read: {statement!r}; it may "
                "change the database (setval, a function), so replaying without it could "
                "diverge: teach _is_read about it, or migrate each test's database instead"
            )
        if parameters:
            raise RuntimeError(
                "a migration wrote with bound parameters, which a replayed script cannot "
                f"carry: {statement!r} {parameters!r}; migrate each test's database instead"
            )
        writes.append(statement.strip())

    async with scratch_postgres(admin_url) as url:
        engine = create_engine(url)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
    return ";\n".join(writes) + ";\n"
