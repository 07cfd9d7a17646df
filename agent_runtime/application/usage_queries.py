"""UsageService.GetUsage: the caller's tenant's token totals over a time range."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.application import pagination
from agent_runtime.application.commands import GetUsage
from agent_runtime.application.pagination import Page
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.model import UsageTotals
from agent_runtime.domain.usage import UsageGroup

_GROUPS_TOKEN = "usg"
# Groups are small (a key and four counts): a page of the most a client may ask for is the
# default, so that a client that reads no token gets every group of all but the largest
# reports. One group per session or model may still be more than one message holds.
DEFAULT_GROUPS = pagination.MAX_PAGE_SIZE


@dataclass(frozen=True, slots=True)
class UsagePage:
    total: UsageTotals  # the whole range's
    groups: Page[UsageGroup]  # by key, ascending


class UsageQueries:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def report(self, query: GetUsage) -> UsagePage:
        if query.start is not None and query.end is not None and query.end < query.start:
            raise InvalidInput.field("end_time", "must not be before start_time")
        limit = pagination.page_size(query.page_size or DEFAULT_GROUPS)
        after = pagination.decode_key_token(query.page_token, _GROUPS_TOKEN)
        async with self._uow_factory.reader(query.tenant_id) as uow:
            report = await uow.usage.report(
                query.start, query.end, query.group_by, after=after, limit=limit + 1
            )
        return UsagePage(report.total, Page.of(report.groups, limit, _after_group))


def _after_group(group: UsageGroup) -> str:
    return pagination.encode_key_token(_GROUPS_TOKEN, group.key)
