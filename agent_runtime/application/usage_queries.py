"""UsageService.GetUsage: the caller's tenant's token totals over a time range."""

from __future__ import annotations

from agent_runtime.application.commands import GetUsage
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.usage import UsageReport


class UsageQueries:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def report(self, query: GetUsage) -> UsageReport:
        if query.start is not None and query.end is not None and query.end < query.start:
            raise InvalidInput.field("end_time", "must not be before start_time")
        async with self._uow_factory.reader(query.tenant_id) as uow:
            return await uow.usage.report(query.start, query.end, query.group_by)
