"""The database readiness probe: reachable, and its schema at the migrations' head."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime.application.readiness import Readiness
from agent_runtime.infrastructure.db.migrate import head_revision

# Read directly (not through Alembic's MigrationContext, which logs every time it looks).
_REVISION = text("SELECT version_num FROM alembic_version")
_MAX_PROBLEM_CHARS = 200


class DatabaseReadinessProbe:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._head = head_revision()  # read once: the migrations ship with this process

    async def check(self) -> Readiness:
        try:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                revisions = (await connection.execute(_REVISION)).scalars().all()
        except Exception as exc:  # any driver or pool error means: cannot use the database
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return Readiness(
                False,
                f"database unusable: {type(exc).__name__}: {first_line[:_MAX_PROBLEM_CHARS]}",
            )
        if revisions != [self._head]:
            found = ", ".join(revisions) or "none"
            return Readiness(
                False, f"database schema at revision {found}, this server needs {self._head}"
            )
        return Readiness(True)
