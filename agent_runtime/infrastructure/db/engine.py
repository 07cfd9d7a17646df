"""Creating the async engine: SQLite (aiosqlite) with the settings the turn pipeline relies
on, or PostgreSQL (asyncpg) when the database URL says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, StaticPool, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/agent_runtime.db"

# How long a writer waits for SQLite's write lock before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000

# URLs without a driver (as most tools write them) get the async driver we ship.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalise_database_url(url: str) -> URL:
    """`postgresql://...` (or `postgres://`) means asyncpg, `sqlite:///...` aiosqlite."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def is_in_memory_sqlite(url: str | URL) -> bool:
    parsed = normalise_database_url(url) if isinstance(url, str) else url
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        not database or database == ":memory:" or "mode=memory" in database
    )


def create_engine(
    url: str = DEFAULT_DATABASE_URL,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    echo: bool = False,
) -> AsyncEngine:
    """`pool_size` connections stay open; up to `max_overflow` more are opened under load."""
    parsed = normalise_database_url(url)
    pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, echo=echo, pool_pre_ping=True, **pool)

    database = parsed.database or ""
    in_memory = not database or database == ":memory:"
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # An in-memory database lives in one connection: pool sizes do not apply.
    engine = create_async_engine(parsed, echo=echo, **({} if in_memory else pool))
    _configure_sqlite(engine.sync_engine)
    return engine


def create_sqlite_writer_engine(url: URL) -> Engine:
    """A synchronous engine (the standard sqlite3 driver) with one connection, configured
    as the async engine's are, for sqlite_writer.SqliteWriter. That connection is used by
    the event loop's thread and by the writer's thread, one at a time. The writer issues
    BEGIN IMMEDIATE itself (it first tries without waiting), so no begin hook here."""
    engine = create_sync_engine(
        url.set(drivername="sqlite+pysqlite"),
        poolclass=StaticPool,
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine, begin_immediate=False)
    return engine


def create_sqlite_reader_engine(url: URL, *, pool_size: int = 5) -> AsyncEngine:
    """The async engine (aiosqlite) of the read-only units of work: a small pool of
    connections that can only read (query_only), each reading in a deferred transaction
    (one snapshot per unit of work, no lock taken). In WAL mode they never wait for the
    writer, nor it for them. The writer and the migrations put the file in WAL mode (a
    persistent setting)."""
    engine = create_async_engine(
        url.set(drivername="sqlite+aiosqlite"), pool_size=pool_size, max_overflow=pool_size
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is ours (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")  # deferred: the first read takes the snapshot

    return engine


def _configure_sqlite(engine: Engine, *, begin_immediate: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below), so the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer; synchronous=FULL keeps every commit durable.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Statement and savepoint journals (group commit puts each unit of work in a
        # SAVEPOINT) in memory, not in temporary files: a statement's write then makes no
        # system calls. A turn's statements took 0.35 ms of CPU, 0.23 ms with it
        # (docs/benchmarks/README.md, "SQLite's journals in memory").
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    if not begin_immediate:
        return

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail at once with SQLITE_BUSY when another writer committed in between, and the
        # busy timeout does not help there. Our transactions are short (none spans a model call).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
