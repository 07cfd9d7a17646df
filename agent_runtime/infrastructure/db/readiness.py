"""The database readiness probe: reachable, and its schema at the migrations' head.

It reads on the unit-of-work factory's readers, as the pending-approvals gauge does. On
SQLite those run their statements inline (sqlite_readers.py), so the probe answers within
one step of the event loop: its timeout then measures the database, not how busy the loop
is (an overloaded loop made the old probe, a few hops through aiosqlite's thread, time out
and pull a busy but healthy replica). A lock readers must wait for is still waited for on a
thread, so the timeout fires as before; and as a WAL reader it does not wait for the
writer, whose commits under load are no sign of a database that cannot serve. PostgreSQL
reads on its read-only sessions (asyncpg: one round trip per statement).
"""

from __future__ import annotations

from sqlalchemy import text

from agent_runtime.application.readiness import Readiness
from agent_runtime.infrastructure.db.migrate import head_revision
from agent_runtime.infrastructure.db.unit_of_work import SqlAlchemyUnitOfWorkFactory

# Read directly (not through Alembic's MigrationContext, which logs every time it looks).
# Reading it takes a working connection and a readable file: no separate SELECT 1 needed.
_REVISION = text("SELECT version_num FROM alembic_version")
_MAX_PROBLEM_CHARS = 200


class DatabaseReadinessProbe:
    def __init__(self, uow_factory: SqlAlchemyUnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory
        self._head = head_revision()  # read once: the migrations ship with this process

    async def check(self) -> Readiness:
        try:
            revisions = await self._uow_factory.read_scalars(_REVISION)
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
