"""UsageService: translates GetUsage to the usage queries and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from agent_runtime.api.auth import caller_tenant
from agent_runtime.api.errors import unary_errors
from agent_runtime.api.mapping import USAGE_GROUPS_FROM_PROTO, usage_report_to_proto
from agent_runtime.application.commands import GetUsage
from agent_runtime.application.usage_queries import UsageQueries
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.v1 import usage_pb2 as us
from agent_runtime.v1 import usage_pb2_grpc as us_grpc


class UsageServicer(us_grpc.UsageServiceServicer):
    def __init__(self, usage: UsageQueries) -> None:
        self._usage = usage

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
            )
        )
        return usage_report_to_proto(report)


def _time(request: us.GetUsageRequest, name: str) -> datetime | None:
    if not request.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput.field(name, f"is not a valid time: {exc}") from None
