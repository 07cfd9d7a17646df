"""EventService: streams the outbox's committed events to gateways and dashboards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from agent_runtime.api.auth import caller_tenant
from agent_runtime.api.errors import abort, internal_error
from agent_runtime.api.interceptors import check_decoded
from agent_runtime.api.mapping import EVENT_TYPES_FROM_PROTO, event_to_proto
from agent_runtime.api.stream_limits import StreamLimits
from agent_runtime.application.commands import WatchEvents
from agent_runtime.application.event_watcher import EventWatcher
from agent_runtime.domain.errors import DomainError, InvalidInput
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import event_pb2_grpc as ev_grpc

CURSOR_METADATA = "x-event-cursor"


class EventServicer(ev_grpc.EventServiceServicer):
    def __init__(self, watcher: EventWatcher, limits: StreamLimits) -> None:
        self._watcher = watcher
        self._limits = limits

    async def WatchEvents(
        self, request: ev.WatchEventsRequest, context: Any
    ) -> AsyncIterator[ev.WatchEventsResponse]:
        try:
            check_decoded(request)
            query = _to_query(request, caller_tenant())
            slot = self._limits.hold(query.tenant_id, context)
        except DomainError as error:
            await abort(context, error)
        try:
            cursor = await self._watcher.start_cursor(query)
            # Tells the client where the stream starts (and that it is live from here on).
            await context.send_initial_metadata(((CURSOR_METADATA, str(cursor)),))
            async with aclosing(self._watcher.watch(query, cursor)) as events:
                async for stored in events:
                    yield ev.WatchEventsResponse(event=event_to_proto(stored))
        except DomainError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, internal_error(exc))
        finally:
            slot.release()


def _to_query(request: ev.WatchEventsRequest, tenant_id: str) -> WatchEvents:
    types = set()
    for value in request.event_types:
        if value not in EVENT_TYPES_FROM_PROTO:
            raise InvalidInput.field("event_types", f"unknown event type {value}")
        types.add(EVENT_TYPES_FROM_PROTO[value])
    return WatchEvents(
        session_id=request.session_id,
        types=frozenset(types),
        after_event_id=request.after_event_id if request.HasField("after_event_id") else None,
        tenant_id=tenant_id,
    )
