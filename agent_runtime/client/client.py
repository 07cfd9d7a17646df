"""AgentRuntimeClient: typed async calls to the runtime over grpc.aio, retried where safe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc

from agent_runtime.client import calls
from agent_runtime.client.base import ClientBase
from agent_runtime.client.calls import Pages, UnaryCall
from agent_runtime.client.inputs import TurnInput
from agent_runtime.client.streams import ResumableStream
from agent_runtime.v1 import agent_pb2, event_pb2
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us

_Result = TypeVar("_Result")
_Item = TypeVar("_Item")


class AgentRuntimeClient(ClientBase[grpc.aio.Channel]):
    """An async client for one runtime.

        async with AgentRuntimeClient("127.0.0.1:50051", api_key="...") as client:
            async for chunk in client.stream_message("my-session", "hello"):
                ...

    Failed calls raise AgentRuntimeError. Reads are retried on UNAVAILABLE (and on
    RESOURCE_EXHAUSTED / ABORTED when the server attaches RetryInfo); writes that cannot be
    repeated safely (create, delete, cancel) are not. A turn is retried because every
    StreamMessage carries a client_message_id, which makes the server attach a repeated request
    to the turn the first one started instead of starting another. Create it inside the event
    loop that uses it (grpc.aio binds its channel to that loop).
    """

    _transport = grpc.aio

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AgentRuntimeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- turns -----------------------------------------------------------------------------

    def stream_message(
        self,
        session_id: str,
        turn_input: TurnInput | str,
        *,
        client_message_id: str | None = None,
        agent: str = "",
        model: str = "",
        generation: mc.GenerationConfig | None = None,
        tools: Sequence[mc.ToolDefinition] = (),
        timeout: float | None = None,
    ) -> AsyncGenerator[rt.StreamChunk, None]:
        """Send one input (a str is a user message) and yield the chunks of the turn it starts.

        An empty session_id gets a fresh client-chosen id (so a retry cannot create a second
        session); the session is created on first use. Without a client_message_id one is
        generated. If the stream breaks, the rest of the turn is fetched with ResumeStream
        after the last seq received, so no chunk is yielded twice and none is skipped (a turn
        that ended meanwhile is replayed from what was persisted: its final message, without
        deltas). A turn interrupted by the death of the server process running it raises
        TurnInterrupted. Close the iterator (aclose(), or contextlib.aclosing around the
        loop) or cancel the task to cancel the call: the server then cancels the turn.
        """
        turn = self._turn(
            session_id, turn_input, client_message_id, agent, model, timeout, generation, tools
        )
        return self._follow(turn)

    def resume_stream(
        self, session_id: str, turn_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> AsyncGenerator[rt.StreamChunk, None]:
        """A turn's chunks after `after_seq`, then live until it ends (TurnInterrupted if it
        was interrupted)."""
        return self._follow(self._resumed_turn(session_id, turn_id, after_seq, timeout))

    async def cancel_turn(
        self, session_id: str, turn_id: str, *, timeout: float | None = None
    ) -> None:
        await self._call(calls.cancel_turn(session_id, turn_id), timeout)

    # -- sessions --------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str = "",
        *,
        title: str = "",
        agent: str = "",
        instructions: str = "",
        tools: Sequence[mc.ToolDefinition] = (),
        generation: mc.GenerationConfig | None = None,
        timeout: float | None = None,
    ) -> ses.Session:
        """`instructions`, `tools`, `generation`: what every turn of the session gets (its
        requests' own generation fields win over these)."""
        call = calls.create_session(
            session_id,
            title,
            agent,
            instructions=instructions,
            tools=tools,
            generation=generation,
        )
        return await self._call(call, timeout)

    async def update_session(
        self,
        session_id: str,
        *,
        title: str | None = None,
        instructions: str | None = None,
        agent: str | None = None,
        tools: Sequence[mc.ToolDefinition] | None = None,
        generation: mc.GenerationConfig | None = None,
        approval_grants: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> ses.Session:
        """Change the fields given (None: left as they are; an empty value clears).
        `approval_grants`: the ids of the APPROVE_ALWAYS grants to keep; the others are
        revoked."""
        call = calls.update_session(
            session_id,
            title=title,
            instructions=instructions,
            agent=agent,
            tools=tools,
            generation=generation,
            approval_grants=approval_grants,
        )
        return await self._call(call, timeout)

    async def get_session(self, session_id: str, *, timeout: float | None = None) -> ses.Session:
        return await self._call(calls.get_session(session_id), timeout)

    async def list_sessions_page(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> ses.ListSessionsResponse:
        return await self._call(calls.list_sessions_page(page_size, page_token), timeout)

    def list_sessions(self, *, page_size: int = 0) -> AsyncGenerator[ses.Session, None]:
        """Every session, most recently active first, fetched a page at a time."""
        return self._every(calls.every_session(page_size))

    async def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        await self._call(calls.delete_session(session_id), timeout)

    async def list_messages_page(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        include_superseded: bool = False,
        timeout: float | None = None,
    ) -> ses.ListMessagesResponse:
        """One page of the session's messages; with include_superseded, also those a
        regenerate or an edit superseded."""
        call = calls.list_messages_page(session_id, page_size, page_token, include_superseded)
        return await self._call(call, timeout)

    def list_messages(
        self, session_id: str, *, page_size: int = 0, include_superseded: bool = False
    ) -> AsyncGenerator[ses.Message, None]:
        """The session's messages in conversation order, fetched a page at a time; with
        include_superseded, also those a regenerate or an edit superseded."""
        return self._every(calls.every_message(session_id, page_size, include_superseded))

    async def get_turn(
        self, session_id: str, turn_id: str, *, timeout: float | None = None
    ) -> ses.Turn:
        return await self._call(calls.get_turn(session_id, turn_id), timeout)

    def list_turns(self, session_id: str, *, page_size: int = 0) -> AsyncGenerator[ses.Turn, None]:
        """The session's turns, oldest first, fetched a page at a time."""
        return self._every(calls.every_turn(session_id, page_size))

    def list_agent_switches(
        self, session_id: str, *, page_size: int = 0
    ) -> AsyncGenerator[ses.AgentSwitch, None]:
        """Every agent switch of the session, oldest first, fetched a page at a time
        (get_session's agent_history has the most recent ones only)."""
        return self._every(calls.every_agent_switch(session_id, page_size))

    async def revoke_approval_grant(
        self, session_id: str, grant_id: str, *, timeout: float | None = None
    ) -> None:
        """End an APPROVE_ALWAYS grant (GetSession lists them)."""
        await self._call(calls.revoke_approval_grant(session_id, grant_id), timeout)

    async def get_usage(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: us.UsageGroupBy.ValueType = us.USAGE_GROUP_BY_UNSPECIFIED,
        timeout: float | None = None,
    ) -> us.GetUsageResponse:
        """The tenant's token totals of the turns that ended in [start, end), grouped (every
        group: the pages the server sent them in, one gRPC message each, put together)."""
        report = await self._call(calls.get_usage(start, end, group_by), timeout)
        while token := report.next_page_token:
            page = await self._call(calls.get_usage(start, end, group_by, token), timeout)
            calls.with_next_groups(report, page)
        return report

    def list_pending_approvals(
        self, session_id: str, *, page_size: int = 0
    ) -> AsyncGenerator[ses.PendingApproval, None]:
        """Tool calls waiting for a decision; decide with stream_message(approve/edit/reject)."""
        return self._every(calls.every_pending_approval(session_id, page_size))

    # -- agents and events -----------------------------------------------------------------

    async def list_agents(self, *, timeout: float | None = None) -> list[agent_pb2.Agent]:
        return await self._call(calls.list_agents(), timeout)

    def watch_events(
        self,
        *,
        session_id: str = "",
        event_types: Sequence[event_pb2.EventType.ValueType] = (),
        after_event_id: int | None = None,
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """Committed events after `after_event_id` (None: from now on), then live. A broken
        stream is reopened after the last event received; before the first one, only when a
        cursor was given (else events in the gap could be missed)."""
        return self._follow(self._event_watch(session_id, event_types, after_event_id))

    # -- the transport ---------------------------------------------------------------------

    async def _call(self, call: UnaryCall[_Result], timeout: float | None) -> _Result:
        attempts = self._unary_attempts(timeout)
        while True:
            method = call.method(self._stubs)
            try:
                response: Any = await method(
                    call.request, metadata=self._metadata, timeout=attempts.remaining()
                )
                return call.result(response)
            except grpc.aio.AioRpcError as failure:
                delay = attempts.delay_after(failure, repeatable=call.repeatable)
            await asyncio.sleep(delay)

    async def _follow(self, stream: ResumableStream[Any, _Item]) -> AsyncGenerator[_Item, None]:
        while True:
            call = stream.open(self._stubs, self._metadata)
            try:
                async for response in call:
                    if (item := stream.take(response)) is not None:
                        yield item
                return
            except grpc.aio.AioRpcError as failure:
                delay = stream.delay_after(failure)
            finally:
                call.cancel()  # a caller that stops early (or is cancelled) ends the call
            await asyncio.sleep(delay)

    async def _every(self, pages: Pages[_Item]) -> AsyncGenerator[_Item, None]:
        token = ""
        while True:
            response = await self._call(pages.page(token), None)
            for item in pages.items(response):
                yield item
            if not (token := response.next_page_token):
                return
