"""One set of migrations, one schema: SQLite and PostgreSQL end up with the same tables,
and both are what tables.py (the code's view of the schema) says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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
    func,
    inspect,
    select,
)
from sqlalchemy.engine.interfaces import ReflectedIndex
from sqlalchemy.types import TypeEngine

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.message_repository import (
    _TOOL_CALL_MESSAGE,
    _TOOL_RESULT_MESSAGE,
)
from agent_runtime.infrastructure.db.migrate import schema_is_current, upgrade_to_head
from agent_runtime.infrastructure.db.tables import StoredText, metadata, turns
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
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    _partial(connection.dialect.name, i),
                )
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")  # PostgreSQL's index behind a UNIQUE
            },
            "foreign_keys": {
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            },
        }
    return schema


def _partial(dialect: str, index: ReflectedIndex) -> bool:
    """The index keeps only the rows a WHERE selects (as reflected: sqlite_where or
    postgresql_where)."""
    return index.get("dialect_options", {}).get(f"{dialect}_where") is not None


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
                (
                    i.name,
                    tuple(c.name for c in i.columns),
                    bool(i.unique),
                    i.dialect_options["sqlite"]["where"] is not None,
                )
                for i in table.indexes
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


async def test_lookups_by_call_id_and_by_end_time_use_the_partial_indexes(
    tmp_path: Path,
) -> None:
    # A partial index serves a query only if the query's condition implies the index's
    # (migration 0009): each of these must still find its rows through its index.
    day = datetime(2026, 12, 5, tzinfo=UTC)
    by_call = {"key_tenant": "t", "key_session": "s", "key_call": "call_1"}
    queries = {
        "ix_messages_requested_call": _TOOL_CALL_MESSAGE.params(by_call),
        "ix_messages_tool_call": _TOOL_RESULT_MESSAGE.params(by_call),
        "ix_turns_tenant_finished": select(func.count()).where(
            turns.c.tenant_id == "t",
            turns.c.finished_at >= day,
            turns.c.finished_at < day + timedelta(days=1),
        ),
    }
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    try:
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            for index, query in queries.items():
                sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
                plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
                details = " ".join(str(step[-1]) for step in plan)
                assert f"INDEX {index} (" in details, details
    finally:
        await engine.dispose()
