"""BlockingAgentRuntimeClient: the same typed calls as AgentRuntimeClient, for code without an
event loop (scripts, WSGI gateways), over a blocking grpc channel."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Sequence
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


class BlockingAgentRuntimeClient(ClientBase[grpc.Channel]):
    """A blocking client for one runtime: AgentRuntimeClient's methods, errors and retries,
    returning values and plain iterators instead of awaitables and async iterators.

        with BlockingAgentRuntimeClient("127.0.0.1:50051", api_key="...") as client:
            for chunk in client.stream_message("my-session", "hello"):
                ...

    One client may serve many threads at once (a WSGI server's): open it once per process,
    after any fork, and share it. Close a stream early with its close() (or
    contextlib.closing around the loop): the call is cancelled, and the server cancels the
    turn.
    """

    _transport = grpc

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BlockingAgentRuntimeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
    ) -> Generator[rt.StreamChunk, None, None]:
        """As AgentRuntimeClient.stream_message: the chunks of the turn this input starts,
        resumed after the last seq received if the stream breaks."""
        turn = self._turn(
            session_id, turn_input, client_message_id, agent, model, timeout, generation, tools
        )
        return self._follow(turn)

    def resume_stream(
        self, session_id: str, turn_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> Generator[rt.StreamChunk, None, None]:
        return self._follow(self._resumed_turn(session_id, turn_id, after_seq, timeout))

    def cancel_turn(self, session_id: str, turn_id: str, *, timeout: float | None = None) -> None:
        self._call(calls.cancel_turn(session_id, turn_id), timeout)

    # -- sessions --------------------------------------------------------------------------

    def create_session(
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
        return self._call(call, timeout)

    def update_session(
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
        return self._call(call, timeout)

    def get_session(self, session_id: str, *, timeout: float | None = None) -> ses.Session:
        return self._call(calls.get_session(session_id), timeout)

    def list_sessions_page(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> ses.ListSessionsResponse:
        return self._call(calls.list_sessions_page(page_size, page_token), timeout)

    def list_sessions(self, *, page_size: int = 0) -> Generator[ses.Session, None, None]:
        return self._every(calls.every_session(page_size))

    def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        self._call(calls.delete_session(session_id), timeout)

    def list_messages_page(
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
        return self._call(call, timeout)

    def list_messages(
        self, session_id: str, *, page_size: int = 0, include_superseded: bool = False
    ) -> Generator[ses.Message, None, None]:
        """The session's messages in conversation order, fetched a page at a time; with
        include_superseded, also those a regenerate or an edit superseded."""
        return self._every(calls.every_message(session_id, page_size, include_superseded))

    def get_turn(self, session_id: str, turn_id: str, *, timeout: float | None = None) -> ses.Turn:
        return self._call(calls.get_turn(session_id, turn_id), timeout)

    def list_turns(self, session_id: str, *, page_size: int = 0) -> Generator[ses.Turn, None, None]:
        """The session's turns, oldest first, fetched a page at a time."""
        return self._every(calls.every_turn(session_id, page_size))

    def list_agent_switches(
        self, session_id: str, *, page_size: int = 0
    ) -> Generator[ses.AgentSwitch, None, None]:
        """Every agent switch of the session, oldest first, fetched a page at a time
        (get_session's agent_history has the most recent ones only)."""
        return self._every(calls.every_agent_switch(session_id, page_size))

    def revoke_approval_grant(
        self, session_id: str, grant_id: str, *, timeout: float | None = None
    ) -> None:
        """End an APPROVE_ALWAYS grant (GetSession lists them)."""
        self._call(calls.revoke_approval_grant(session_id, grant_id), timeout)

    def get_usage(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: us.UsageGroupBy.ValueType = us.USAGE_GROUP_BY_UNSPECIFIED,
        timeout: float | None = None,
    ) -> us.GetUsageResponse:
        """The tenant's token totals of the turns that ended in [start, end), grouped (every
        group: the pages the server sent them in, one gRPC message each, put together)."""
        report = self._call(calls.get_usage(start, end, group_by), timeout)
        while token := report.next_page_token:
            page = self._call(calls.get_usage(start, end, group_by, token), timeout)
            calls.with_next_groups(report, page)
        return report

    def list_pending_approvals(
        self, session_id: str, *, page_size: int = 0
    ) -> Generator[ses.PendingApproval, None, None]:
        return self._every(calls.every_pending_approval(session_id, page_size))

    # -- agents and events -----------------------------------------------------------------

    def list_agents(self, *, timeout: float | None = None) -> list[agent_pb2.Agent]:
        return self._call(calls.list_agents(), timeout)

    def watch_events(
        self,
        *,
        session_id: str = "",
        event_types: Sequence[event_pb2.EventType.ValueType] = (),
        after_event_id: int | None = None,
    ) -> Generator[event_pb2.Event, None, None]:
        return self._follow(self._event_watch(session_id, event_types, after_event_id))

    # -- the transport ---------------------------------------------------------------------

    def _call(self, call: UnaryCall[_Result], timeout: float | None) -> _Result:
        attempts = self._unary_attempts(timeout)
        while True:
            method = call.method(self._stubs)
            try:
                response = method(
                    call.request, metadata=self._metadata, timeout=attempts.remaining()
                )
                return call.result(response)
            except grpc.RpcError as failure:
                delay = attempts.delay_after(failure, repeatable=call.repeatable)
            time.sleep(delay)

    def _follow(self, stream: ResumableStream[Any, _Item]) -> Generator[_Item, None, None]:
        while True:
            call = stream.open(self._stubs, self._metadata)
            try:
                for response in call:
                    if (item := stream.take(response)) is not None:
                        yield item
                return
            except grpc.RpcError as failure:
                delay = stream.delay_after(failure)
            finally:
                call.cancel()  # a caller that stops early ends the call
            time.sleep(delay)

    def _every(self, pages: Pages[_Item]) -> Generator[_Item, None, None]:
        token = ""
        while True:
            response = self._call(pages.page(token), None)
            yield from pages.items(response)
            if not (token := response.next_page_token):
                return
