"""What the SQLite writer runs on the driver's own connection (sqlite3, under a
SQLAlchemy Connection): BEGIN, COMMIT, SAVEPOINTs and PRAGMAs they issue themselves, with
its errors wrapped as SQLAlchemy would wrap them, so that translate_error makes them domain
errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from agent_runtime.domain.errors import StorageUnavailable


def raw_connection(connection: Connection) -> Any:
    """The sqlite3 connection under `connection`."""
    return connection.connection.dbapi_connection


@contextmanager
def driver_errors(statement: str) -> Iterator[None]:
    """sqlite3 errors inside come out as DBAPIError, as SQLAlchemy's own statements' do."""
    try:
        yield
    except sqlite3.Error as exc:
        raise as_dbapi_error(statement, exc) from exc


def as_dbapi_error(statement: str, error: sqlite3.Error) -> StatementError:
    """A sqlite3 error as SQLAlchemy wraps its own statements' errors."""
    return DBAPIError.instance(statement, None, error, sqlite3.Error)


def run_raw(raw: Any, sql: str) -> Any:
    """Runs `sql` on the sqlite3 connection `raw`; its cursor."""
    with driver_errors(sql):
        return raw.execute(sql)


def is_busy(error: BaseException | None) -> bool:
    """SQLITE_BUSY (or one of its extended codes): a lock another connection holds."""
    return (
        isinstance(error, sqlite3.OperationalError)
        and error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


def set_busy_timeout(connection: Connection, milliseconds: int) -> None:
    """How long the connection's statements wait for a lock before SQLITE_BUSY."""
    run_raw(raw_connection(connection), f"PRAGMA busy_timeout={milliseconds}")


def end_transaction(connection: Connection | None) -> None:
    """Rolls back whatever is open, as SQLAlchemy sees it and as SQLite does."""
    if connection is None or connection.closed:
        return
    # Also a transaction SQLAlchemy deactivated when its COMMIT failed (e.g. disk full):
    # it stays attached, not in_transaction(), and blocks the next begin() until this.
    connection.rollback()
    raw = raw_connection(connection)
    if raw is not None and raw.in_transaction:
        raw.rollback()


def still_open(connection: Connection) -> Any:
    """The driver's connection, if its transaction is still open."""
    raw = raw_connection(connection)
    if not raw.in_transaction:
        # SQLite itself rolled the transaction back (after SQLITE_FULL, IOERR...): the
        # driver's commit would do nothing and report success.
        raise StorageUnavailable("the database rolled the transaction back before its commit")
    return raw


def commit_open_transaction(connection: Connection) -> None:
    """The driver's COMMIT of the open transaction (StorageUnavailable if SQLite ended it)."""
    raw = still_open(connection)
    with driver_errors("COMMIT"):
        raw.commit()
