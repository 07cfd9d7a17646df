"""A database copied from a test process's template (tests/support/migrated_databases.py)
is the database a migration from nothing makes: same tables, columns, defaults, indexes,
constraints and revision, and on PostgreSQL owned by the test's role as if it had migrated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import upgrade_to_head
from tests.support.databases import BACKENDS, database_for, query
from tests.support.migrated_databases import migrated_database_for

_SQLITE_CATALOGUE = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
_POSTGRES_CATALOGUE = {
    "columns": (
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable,"
        " column_default FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, column_name"
    ),
    "indexes": (
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " ORDER BY indexname"
    ),
    "constraints": (
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = current_schema() ORDER BY 1, 2"
    ),
    "sequences": (
        "SELECT sequence_name, data_type FROM information_schema.sequences"
        " WHERE sequence_schema = current_schema() ORDER BY 1"
    ),
    "views": (
        "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema() ORDER BY 1"
    ),
    "functions": (
        "SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
        " WHERE pronamespace = current_schema()::regnamespace ORDER BY 1"
    ),
    "triggers": (
        "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE NOT tgisinternal AND tgrelid IN"
        " (SELECT oid FROM pg_class WHERE relnamespace = current_schema()::regnamespace)"
        " ORDER BY 1, 2"
    ),
    "owners": (
        "SELECT tableowner = current_user, count(*) FROM pg_tables"
        " WHERE schemaname = current_schema() GROUP BY 1"
    ),
}


Catalogue = tuple[Sequence[tuple[Any, ...]], Any]


async def _catalogue(url: str) -> Catalogue:
    """What the database holds, with the scratch schema's own name taken out."""
    revision = await query(url, "SELECT version_num FROM alembic_version")
    if url.startswith("sqlite"):
        return revision, await query(url, _SQLITE_CATALOGUE)
    schema = make_url(url).username or ""
    tables = {
        name: [
            tuple(str(value).replace(f"{schema}.", "") for value in row)
            for row in await query(url, sql)
        ]
        for name, sql in _POSTGRES_CATALOGUE.items()
    }
    return revision, tables


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_copy_is_what_a_migration_from_nothing_makes(backend: str, tmp_path: Path) -> None:
    async with database_for(backend, str(tmp_path / "migrated.db")) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        migrated = await _catalogue(url)
    async with migrated_database_for(backend, str(tmp_path / "copy.db")) as url:
        copied = await _catalogue(url)
    assert copied == migrated
    revision, tables = migrated
    assert revision and tables  # the comparison compared something
    if backend == "postgresql":
        assert isinstance(tables, dict)
        # Every table belongs to the test's role, in both: one group, "owned".
        assert [owned for owned, _count in tables["owners"]] == ["True"]
