"""One set of migrations, one schema: SQLite and PostgreSQL end up with the same tables,
and both are what tables.py (the code's view of the schema) says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.types import TypeEngine

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import schema_is_current, upgrade_to_head
from agent_runtime.infrastructure.db.tables import StoredText, metadata
from tests.support.databases import database_for

Schema = dict[str, dict[str, Any]]


def _type_name(column_type: TypeEngine[Any]) -> str:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    # Integer widths differ on purpose: SQLite's autoincrement key must be INTEGER.
    for kind, name in ((Boolean, "boolean"), (Integer, "integer"), (DateTime, "datetime")):
        if isinstance(column_type, kind):
            return name
    if isinstance(column_type, Text):
        return "text"
    if isinstance(column_type, String):
        return f"string({column_type.length})"
    raise AssertionError(f"no normal form for column type {column_type!r}")


def _reflect(connection: Connection) -> Schema:
    inspector = inspect(connection)
    schema: Schema = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": {
                c["name"]: (_type_name(c["type"]), c["nullable"])
                for c in inspector.get_columns(table)
            },
            "primary_key": tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
            "unique": {
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            },
            "indexes": {
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")  # PostgreSQL's index behind a UNIQUE
            },
            "foreign_keys": {
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            },
        }
    return schema


def _declared(tables: MetaData) -> Schema:
    schema: Schema = {}
    for table in tables.sorted_tables:
        schema[table.name] = {
            "columns": {c.name: (_type_name(c.type), bool(c.nullable)) for c in table.columns},
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "unique": {
                (u.name, tuple(c.name for c in u.columns))
                for u in table.constraints
                if isinstance(u, UniqueConstraint)
            },
            "indexes": {
                (i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
            },
            "foreign_keys": {
                (
                    tuple(c.name for c in f.columns),
                    f.referred_table.name,
                    tuple(e.column.name for e in f.elements),
                )
                for f in table.foreign_key_constraints
            },
        }
    return schema


async def _migrated_schema(backend: str, tmp_path: Path) -> tuple[Schema, Any]:
    async with database_for(backend, str(tmp_path / "schema.db")) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            async with engine.connect() as connection:
                schema = await connection.run_sync(_reflect)
                timestamps = await connection.run_sync(
                    lambda sync: {
                        (table, c["name"]): getattr(c["type"], "timezone", None)
                        for table in inspect(sync).get_table_names()
                        for c in inspect(sync).get_columns(table)
                        if isinstance(c["type"], DateTime)
                    }
                )
            return schema, timestamps
        finally:
            await engine.dispose()


async def test_sqlite_and_postgresql_migrate_to_the_schema_the_code_declares(
    tmp_path: Path,
) -> None:
    on_sqlite, _ = await _migrated_schema("sqlite", tmp_path)
    on_postgres, postgres_timestamps = await _migrated_schema("postgresql", tmp_path)

    declared = _declared(metadata)
    assert on_sqlite == declared
    assert on_postgres == declared
    # PostgreSQL keeps the zone (timestamptz); SQLite stores text the code reads back as UTC.
    assert postgres_timestamps and all(postgres_timestamps.values()), postgres_timestamps


async def test_replicas_starting_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    async with database_for("postgresql", str(tmp_path / "unused.db")) as url:
        engines = [create_engine(url) for _ in range(3)]
        try:
            await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
            assert all([await schema_is_current(engine) for engine in engines])
        finally:
            for engine in engines:
                await engine.dispose()


def test_every_text_column_keeps_text_as_every_store_does() -> None:
    """A text column added without StoredText would take U+0000 as it is on SQLite and fail
    on PostgreSQL (domain/text.py)."""
    plain = [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String) and not isinstance(column.type, StoredText)
    ]
    assert plain == []
