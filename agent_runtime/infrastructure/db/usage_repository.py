"""SqlAlchemyUsageRepository: a tenant's token usage, and what its quotas are checked against.

A turn's tokens are counted in the commit that ends it: on its turn row, its session's totals
and the tenant's day (tenant_usage_days). Reports read the turn rows; the daily token quota
reads the day's row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite

from agent_runtime.domain.model import TurnStatus, Usage, UsageTotals
from agent_runtime.domain.usage import UsageGroup, UsageGroupBy, UsageReport
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import tenant_usage_days, turns

# Our namespace ("admt") for the PostgreSQL transaction-level advisory lock, one per tenant,
# that turn admissions of a tenant with quotas take in turn (see lock_admissions).
ADMISSION_LOCK_NAMESPACE = 0x61646D74
_ENDED = (TurnStatus.COMPLETED.value, TurnStatus.FAILED.value, TurnStatus.CANCELLED.value)


def _count_turn(insert: Any) -> Any:
    """Adds a turn to the tenant's day, in one statement, so that concurrent first turns of a
    day on PostgreSQL never collide. Built once: building it (its `excluded` alias above all)
    cost more than running it."""
    return insert.on_conflict_do_update(
        index_elements=[tenant_usage_days.c.tenant_id, tenant_usage_days.c.day],
        set_={
            "prompt_tokens": tenant_usage_days.c.prompt_tokens + insert.excluded.prompt_tokens,
            "completion_tokens": tenant_usage_days.c.completion_tokens
            + insert.excluded.completion_tokens,
            "turns": tenant_usage_days.c.turns + insert.excluded.turns,
        },
    )


_COUNT_TURN_SQLITE = hot(_count_turn(sqlite.insert(tenant_usage_days)))
_COUNT_TURN_POSTGRESQL = _count_turn(pg.insert(tenant_usage_days))


class SqlAlchemyUsageRepository:
    def __init__(self, db: Database, tenant_id: str, *, postgresql: bool = False) -> None:
        self._db = db
        self._tenant = tenant_id
        self._postgresql = postgresql

    async def lock_admissions(self) -> None:
        # SQLite: nothing to do, a writing transaction began IMMEDIATE and holds the one write
        # lock of the file (every process's) until it ends. PostgreSQL: a lock per tenant,
        # held until commit or rollback; READ COMMITTED then shows each statement after it
        # every admission committed before.
        if self._postgresql:
            await self._db.execute(
                select(
                    func.pg_advisory_xact_lock(
                        ADMISSION_LOCK_NAMESPACE, func.hashtext(self._tenant)
                    )
                )
            )

    async def running_turns(self) -> int:
        count = await self._db.scalar(
            select(func.count())
            .select_from(turns)
            .where(turns.c.tenant_id == self._tenant, turns.c.status == TurnStatus.RUNNING.value)
        )
        return int(count or 0)

    async def turns_started_since(self, since: datetime) -> tuple[int, datetime | None]:
        found = (
            await self._db.execute(
                select(func.count(), func.min(turns.c.started_at)).where(
                    turns.c.tenant_id == self._tenant, turns.c.started_at >= since
                )
            )
        ).first()
        return (0, None) if found is None else (int(found[0] or 0), found[1])

    async def tokens_on(self, day: str) -> int:
        used = await self._db.scalar(
            select(tenant_usage_days.c.prompt_tokens + tenant_usage_days.c.completion_tokens).where(
                tenant_usage_days.c.tenant_id == self._tenant, tenant_usage_days.c.day == day
            )
        )
        return int(used or 0)

    async def count_turn(self, day: str, usage: Usage) -> None:
        await self._db.execute(
            _COUNT_TURN_POSTGRESQL if self._postgresql else _COUNT_TURN_SQLITE,
            row(
                tenant_usage_days,
                tenant_id=self._tenant,
                day=day,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                turns=1,
            ),
        )

    async def report(
        self,
        start: datetime | None,
        end: datetime | None,
        group_by: UsageGroupBy,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> UsageReport:
        where: list[ColumnElement[bool]] = [
            turns.c.tenant_id == self._tenant,
            turns.c.status.in_(_ENDED),
        ]
        if start is not None:
            where.append(turns.c.finished_at >= start)
        if end is not None:
            where.append(turns.c.finished_at < end)
        sums = (
            func.coalesce(func.sum(turns.c.prompt_tokens), 0),
            func.coalesce(func.sum(turns.c.completion_tokens), 0),
            func.count(),
        )
        total_row = (await self._db.execute(select(*sums).where(*where))).first()
        total = _totals(total_row)
        key = self._group_key(group_by)
        if key is None:
            return UsageReport(total, [])
        if after is not None:
            where.append(key > after)
        query: Select[Any] = select(key, *sums).where(*where).group_by(key).order_by(key)
        if limit is not None:
            query = query.limit(limit)
        groups = [
            UsageGroup(str(found[0]), _totals(found[1:]))
            for found in (await self._db.execute(query)).all()
        ]
        return UsageReport(total, groups)

    def _group_key(self, group_by: UsageGroupBy) -> ColumnElement[Any] | None:
        match group_by:
            case UsageGroupBy.MODEL:
                return turns.c.model
            case UsageGroupBy.SESSION:
                return turns.c.session_id
            case UsageGroupBy.DAY if self._postgresql:
                return func.to_char(func.timezone("UTC", turns.c.finished_at), "YYYY-MM-DD")
            case UsageGroupBy.DAY:
                # SQLite holds UTC times as text, 'YYYY-MM-DD HH:MM:SS.ffffff' (UTCDateTime).
                return func.substr(turns.c.finished_at, 1, 10)
            case _:
                return None


def _totals(found: Any) -> UsageTotals:
    if found is None:
        return UsageTotals()
    prompt, completion, count = found[0], found[1], found[2]
    return UsageTotals(int(prompt or 0), int(completion or 0), int(count or 0))
