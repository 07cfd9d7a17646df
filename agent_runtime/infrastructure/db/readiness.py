"""The database readiness probe: reachable, and its schema at the migrations' head.

On SQLite it reads inline, on a read-only connection of its own: it answers within one step
of the event loop, so its timeout measures the database, not how busy the loop is (an
overloaded loop made a probe of a few hops through aiosqlite's thread time out, and pulled
a busy but healthy replica). As a WAL reader it does not wait for the writer, whose commits
under load are no sign of a database that cannot serve; a lock that keeps readers out fails
it at once (busy timeout 0). PostgreSQL reads on the read-only sessions of the unit-of-work
factory (asyncpg: one round trip per statement).
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from agent_runtime.application.readiness import Readiness
from agent_runtime.infrastructure.db.migrate import head_revision
from agent_runtime.infrastructure.db.uow_factory import SqlAlchemyUnitOfWorkFactory

# Read directly (not through Alembic's MigrationContext, which logs every time it looks).
# Reading it takes a working connection and a readable file: no separate SELECT 1 needed.
_REVISION = text("SELECT version_num FROM alembic_version")
_MAX_PROBLEM_CHARS = 200


class DatabaseReadinessProbe:
    def __init__(self, uow_factory: SqlAlchemyUnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory
        self._head = head_revision()  # read once: the migrations ship with this process
        self._sqlite_path = uow_factory.sqlite_path
        self._sqlite: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    async def _revisions(self) -> list[str]:
        if self._sqlite_path is None:
            return await self._uow_factory.read_scalars(_REVISION)
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(self._sqlite_path, check_same_thread=False)
            self._sqlite.execute("PRAGMA query_only=ON")
            self._sqlite.execute("PRAGMA busy_timeout=0")
        try:
            return [row[0] for row in self._sqlite.execute(str(_REVISION))]
        except sqlite3.Error:
            self.close()  # opened again by the next check
            raise

    async def check(self) -> Readiness:
        try:
            revisions = await self._revisions()
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
