"""The AsyncSession the repositories use, with database failures turned into domain errors.

A full disk, a read-only file or a lost connection must reach the client as UNAVAILABLE
with a clear message, not as an internal error; integrity violations stay what they are
(bugs), so they are not translated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_runtime.domain.errors import StorageUnavailable

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


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except IntegrityError:
        raise
    except (OperationalError, DBAPIError) as exc:
        detail = str(exc.orig) if exc.orig is not None else type(exc).__name__
        log.error("database error: %s", detail)
        raise StorageUnavailable(f"the database is unavailable: {detail}") from exc
