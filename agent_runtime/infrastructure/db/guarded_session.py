"""The AsyncSession the repositories use (PostgreSQL, and the SQLite readers), with database
failures turned into domain errors.

A full disk, a read-only file, a lost or refused connection or an exhausted pool must reach
the client as UNAVAILABLE with a clear message, not as an internal error. A duplicate key is
a concurrent writer that got there first (WriteConflict: the caller reads again); other
integrity violations and PostgreSQL's data and syntax errors are bugs, so they stay what
they are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Executable
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from agent_runtime.domain.errors import StorageUnavailable, WriteConflict

log = logging.getLogger(__name__)
T = TypeVar("T")


class Database(Protocol):
    """What the repositories run their statements on: a GuardedSession, or on SQLite the
    process's one writer connection (sqlite_writer.WriterSession)."""

    async def execute(self, statement: Executable, params: Any = None) -> Any: ...

    async def scalar(self, statement: Executable, params: Any = None) -> Any: ...

    async def scalars(self, statement: Executable, params: Any = None) -> Any: ...

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        """Commits; `on_committed` is called once the COMMIT has landed, never otherwise.
        (The unit of work runs it to completion: run_to_completion.py.)"""
        ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...


class GuardedSession:
    """An AsyncSession (PostgreSQL, or an aiosqlite reader) whose failures come out as domain
    errors."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def execute(self, statement: Executable, params: Any = None) -> Any:
        return await _guard(lambda: self._session.execute(statement, params))

    async def scalar(self, statement: Executable, params: Any = None) -> Any:
        return await _guard(lambda: self._session.scalar(statement, params))

    async def scalars(self, statement: Executable, params: Any = None) -> Any:
        return await _guard(lambda: self._session.scalars(statement, params))

    async def commit(self, on_committed: Callable[[], None] | None = None) -> None:
        await _guard(self._session.commit)
        if on_committed is not None:
            on_committed()

    async def rollback(self) -> None:
        await _guard(self._session.rollback)

    async def close(self) -> None:
        await self._session.close()


# PostgreSQL SQLSTATE classes that mean a bug in our statements, not an unavailable database:
# data exception, integrity violation, syntax error or access rule violation.
_BUG_CLASSES = ("22", "23", "42")
_UNIQUE_VIOLATION = "23505"


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (DBAPIError, PoolTimeout, OSError) as exc:
        translated = translate_error(exc)
        if translated is exc:
            raise
        raise translated from exc


def guard_sync(call: Callable[[], T]) -> T:
    """`call` (statements on a synchronous connection), its failures as domain errors."""
    try:
        return call()
    except (DBAPIError, OSError) as exc:
        translated = translate_error(exc)
        if translated is exc:
            raise
        raise translated from exc


def translate_error(exc: DBAPIError | PoolTimeout | OSError) -> Exception:
    """The domain error a database failure stands for, or the failure itself for a bug."""
    if isinstance(exc, IntegrityError):
        if _is_duplicate_key(exc):
            return WriteConflict(f"a concurrent request wrote this first: {exc.orig}")
        return exc
    if isinstance(exc, DBAPIError):
        if (_sqlstate(exc) or "")[:2] in _BUG_CLASSES:
            return exc
        return _unavailable(str(exc.orig) if exc.orig is not None else type(exc).__name__)
    if isinstance(exc, PoolTimeout):
        return _unavailable(f"no free database connection ({exc})")
    # asyncpg raises these as they are: refused, reset, timed out
    return _unavailable(f"{type(exc).__name__}: {exc}")


def _unavailable(detail: str) -> StorageUnavailable:
    log.error("database error: %s", detail)
    return StorageUnavailable(f"the database is unavailable: {detail}")


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)  # set by the asyncpg adapter, not by SQLite


def _is_duplicate_key(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == _UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(exc.orig)
