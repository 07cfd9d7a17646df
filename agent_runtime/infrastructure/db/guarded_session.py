"""The AsyncSession the repositories use, with database failures turned into domain errors.

A full disk, a read-only file, a lost or refused connection or an exhausted pool must reach
the client as UNAVAILABLE with a clear message, not as an internal error. A duplicate key is
a concurrent writer that got there first (WriteConflict: the caller reads again); other
integrity violations and PostgreSQL's data and syntax errors are bugs, so they stay what
they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from agent_runtime.domain.errors import StorageUnavailable, WriteConflict

log = logging.getLogger(__name__)
T = TypeVar("T")


class GuardedSession:
    """Also takes the writer gate, when there is one, for the length of each transaction."""

    def __init__(self, session: AsyncSession, gate: asyncio.Lock | None = None) -> None:
        self._session = session
        self._gate = gate
        self._holding = False

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await _guard(lambda: self._session.execute(*args, **kwargs))

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await _guard(lambda: self._session.scalar(*args, **kwargs))

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await _guard(lambda: self._session.scalars(*args, **kwargs))

    async def commit(self) -> None:
        try:
            await _guard(self._session.commit)
        finally:
            self._leave()

    async def rollback(self) -> None:
        try:
            await _guard(self._session.rollback)
        finally:
            self._leave()

    async def close(self) -> None:
        try:
            await self._session.close()
        finally:
            self._leave()

    async def _enter(self) -> None:
        # The first statement of a transaction waits for the gate; SQLAlchemy begins the
        # transaction (BEGIN IMMEDIATE on SQLite) right after.
        if self._gate is not None and not self._holding:
            await self._gate.acquire()
            self._holding = True

    def _leave(self) -> None:
        if self._holding:
            self._holding = False
            assert self._gate is not None
            self._gate.release()


# PostgreSQL SQLSTATE classes that mean a bug in our statements, not an unavailable database:
# data exception, integrity violation, syntax error or access rule violation.
_BUG_CLASSES = ("22", "23", "42")
_UNIQUE_VIOLATION = "23505"


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except IntegrityError as exc:
        if _is_duplicate_key(exc):
            raise WriteConflict(f"a concurrent request wrote this first: {exc.orig}") from exc
        raise
    except DBAPIError as exc:
        if (_sqlstate(exc) or "")[:2] in _BUG_CLASSES:
            raise
        raise _unavailable(str(exc.orig) if exc.orig is not None else type(exc).__name__) from exc
    except PoolTimeout as exc:
        raise _unavailable(f"no free database connection ({exc})") from exc
    except OSError as exc:  # asyncpg raises these as they are: refused, reset, timed out
        raise _unavailable(f"{type(exc).__name__}: {exc}") from exc


def _unavailable(detail: str) -> StorageUnavailable:
    log.error("database error: %s", detail)
    return StorageUnavailable(f"the database is unavailable: {detail}")


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)  # set by the asyncpg adapter, not by SQLite


def _is_duplicate_key(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == _UNIQUE_VIOLATION or "UNIQUE constraint failed" in str(exc.orig)
