"""The AsyncSession the repositories use, with database failures turned into domain errors.

A full disk, a read-only file or a lost connection must reach the client as UNAVAILABLE
with a clear message, not as an internal error; integrity violations stay what they are
(bugs), so they are not translated.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_runtime.domain.errors import StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class GuardedSession:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await _guard(lambda: self._session.execute(*args, **kwargs))

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await _guard(lambda: self._session.scalar(*args, **kwargs))

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return await _guard(lambda: self._session.scalars(*args, **kwargs))

    async def commit(self) -> None:
        await _guard(self._session.commit)

    async def rollback(self) -> None:
        await _guard(self._session.rollback)

    async def close(self) -> None:
        await self._session.close()


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except IntegrityError:
        raise
    except (OperationalError, DBAPIError) as exc:
        detail = str(exc.orig) if exc.orig is not None else type(exc).__name__
        log.error("database error: %s", detail)
        raise StorageUnavailable(f"the database is unavailable: {detail}") from exc
