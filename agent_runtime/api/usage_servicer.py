"""UsageService: translates GetUsage to the usage queries and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from agent_runtime.api.auth import caller_tenant
from agent_runtime.api.errors import unary_errors
from agent_runtime.api.mapping import USAGE_GROUPS_FROM_PROTO, usage_group_to_proto, usage_totals
from agent_runtime.api.page_bytes import fitted
from agent_runtime.application.commands import GetUsage
from agent_runtime.application.usage_queries import UsageQueries
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.v1 import usage_pb2 as us
from agent_runtime.v1 import usage_pb2_grpc as us_grpc


class UsageServicer(us_grpc.UsageServiceServicer):
    """`max_page_bytes`: a page of groups ends before they add up to more."""

    def __init__(self, usage: UsageQueries, *, max_page_bytes: int) -> None:
        self._usage = usage
        self._max_page_bytes = max_page_bytes

    @unary_errors
    async def GetUsage(self, request: us.GetUsageRequest, context: Any) -> us.GetUsageResponse:
        group_by = USAGE_GROUPS_FROM_PROTO.get(request.group_by)
        if group_by is None:
            raise InvalidInput.field("group_by", "must be MODEL, DAY, SESSION or unspecified")
        report = await self._usage.report(
            GetUsage(
                _time(request, "start_time"),
                _time(request, "end_time"),
                group_by,
                tenant_id=caller_tenant(),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        )
        groups, token = fitted(report.groups, usage_group_to_proto, self._max_page_bytes)
        return us.GetUsageResponse(
            total=usage_totals(report.total), groups=groups, next_page_token=token
        )


def _time(request: us.GetUsageRequest, name: str) -> datetime | None:
    if not request.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput.field(name, f"is not a valid time: {exc}") from None
