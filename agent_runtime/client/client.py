"""AgentRuntimeClient: typed async calls to the runtime over grpc.aio, retried where safe."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from agent_runtime.client.connection import TlsConfig, open_channel
from agent_runtime.client.errors import AgentRuntimeError
from agent_runtime.client.inputs import TurnInput, stream_request
from agent_runtime.client.retry import RetryPolicy
from agent_runtime.v1 import agent_pb2, agent_pb2_grpc, event_pb2, event_pb2_grpc
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc as ses_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0

_Response = TypeVar("_Response")
_Item = TypeVar("_Item")


def new_session_id() -> str:
    return f"ses_{uuid.uuid4().hex}"


def new_client_message_id() -> str:
    return f"cmsg_{uuid.uuid4().hex}"


class _Deadline:
    """One time budget shared by every attempt of a call."""

    def __init__(self, seconds: float | None) -> None:
        self._at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def allows_wait(self, delay: float) -> bool:
        remaining = self.remaining()
        return remaining is None or delay < remaining


class AgentRuntimeClient:
    """An async client for one runtime.

        async with AgentRuntimeClient("127.0.0.1:50051", api_key="...") as client:
            async for chunk in client.stream_message("my-session", "hello"):
                ...

    Failed calls raise AgentRuntimeError. Reads are retried on UNAVAILABLE (and on
    RESOURCE_EXHAUSTED / ABORTED when the server attaches RetryInfo); writes that cannot be
    repeated safely (create, delete, cancel) are not. A turn is retried because every
    StreamMessage carries a client_message_id, which makes the server attach a repeated request
    to the turn the first one started instead of starting another.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`timeout`: the default time budget of each unary call, retries included (None: no
        limit). Streams have no default limit: a turn takes as long as the model does."""
        self.target = target
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._channel = open_channel(target, tls, self._retry, channel_options)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._runtime = rt_grpc.AgentRuntimeServiceStub(self._channel)
        self._sessions = ses_grpc.SessionServiceStub(self._channel)
        self._agents = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._events = event_pb2_grpc.EventServiceStub(self._channel)

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
        timeout: float | None = None,
    ) -> AsyncGenerator[rt.StreamChunk, None]:
        """Send one input (a str is a user message) and yield the chunks of the turn it starts.

        An empty session_id gets a fresh client-chosen id (so a retry cannot create a second
        session); the session is created on first use. Without a client_message_id one is
        generated. If the stream breaks, the rest of the turn is fetched with ResumeStream
        after the last seq received, so no chunk is yielded twice and none is skipped (a turn
        that ended meanwhile is replayed from what was persisted: its final message, without
        deltas). Close the iterator (aclose(), or contextlib.aclosing around the loop) or
        cancel the task to cancel the call: the server then cancels the turn.
        """
        request = stream_request(
            session_id or new_session_id(),
            turn_input,
            client_message_id=client_message_id or new_client_message_id(),
            agent=agent,
            model=model,
        )
        return self._turn_stream(
            lambda remaining: self._runtime.StreamMessage(
                request, metadata=self._metadata, timeout=remaining
            ),
            request.session_id,
            timeout,
        )

    def resume_stream(
        self, session_id: str, turn_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> AsyncGenerator[rt.StreamChunk, None]:
        """A turn's chunks after `after_seq`, then live until it ends."""
        return self._turn_stream(None, session_id, timeout, turn_id=turn_id, last_seq=after_seq)

    async def cancel_turn(
        self, session_id: str, turn_id: str, *, timeout: float | None = None
    ) -> None:
        """Not retried: a repeat after a lost answer would fail with TURN_NOT_RUNNING."""
        request = rt.CancelTurnRequest(session_id=session_id, turn_id=turn_id)
        await self._unary(self._runtime.CancelTurn, request, timeout, idempotent=False)

    async def _turn_stream(
        self,
        open_call: Callable[[float | None], Any] | None,
        session_id: str,
        timeout: float | None,
        *,
        turn_id: str = "",
        last_seq: int = 0,
    ) -> AsyncGenerator[rt.StreamChunk, None]:
        deadline = _Deadline(timeout)
        attempt = 0
        while True:
            attempt += 1
            if turn_id or open_call is None:  # the turn exists: fetch what is missing
                request = rt.ResumeStreamRequest(
                    session_id=session_id, turn_id=turn_id, after_seq=last_seq
                )
                call = self._runtime.ResumeStream(
                    request, metadata=self._metadata, timeout=deadline.remaining()
                )
            else:
                call = open_call(deadline.remaining())
            try:
                async for chunk in call:
                    if turn_id == chunk.turn_id and chunk.seq <= last_seq:
                        continue  # a replayed chunk the caller has already had
                    session_id, turn_id, last_seq = chunk.session_id, chunk.turn_id, chunk.seq
                    attempt = 1  # progress: this attempt starts a fresh series
                    yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                error = AgentRuntimeError.from_rpc_error(exc)
                delay = self._retry.delay_before_retry(attempt, error)
                if delay is None or not deadline.allows_wait(delay):
                    raise error from None
            finally:
                call.cancel()  # a caller that stops early (or is cancelled) ends the call
            await asyncio.sleep(delay)

    # -- sessions --------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str = "",
        *,
        title: str = "",
        agent: str = "",
        timeout: float | None = None,
    ) -> ses.Session:
        """Not retried: a repeat after a lost answer would fail with ALREADY_EXISTS (or create
        a second session when the server picks the id)."""
        request = ses.CreateSessionRequest(session_id=session_id, title=title, agent=agent)
        response: ses.CreateSessionResponse = await self._unary(
            self._sessions.CreateSession, request, timeout, idempotent=False
        )
        return response.session

    async def get_session(self, session_id: str, *, timeout: float | None = None) -> ses.Session:
        request = ses.GetSessionRequest(session_id=session_id)
        response: ses.GetSessionResponse = await self._unary(
            self._sessions.GetSession, request, timeout
        )
        return response.session

    async def list_sessions_page(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> ses.ListSessionsResponse:
        request = ses.ListSessionsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._sessions.ListSessions, request, timeout)

    def list_sessions(self, *, page_size: int = 0) -> AsyncGenerator[ses.Session, None]:
        """Every session, most recently active first, fetched a page at a time."""

        async def page(token: str) -> tuple[Iterable[ses.Session], str]:
            response = await self.list_sessions_page(page_size=page_size, page_token=token)
            return response.sessions, response.next_page_token

        return _paged(page)

    async def delete_session(self, session_id: str, *, timeout: float | None = None) -> None:
        """Not retried: a repeat after a lost answer would fail with NOT_FOUND."""
        request = ses.DeleteSessionRequest(session_id=session_id)
        await self._unary(self._sessions.DeleteSession, request, timeout, idempotent=False)

    async def list_messages_page(
        self,
        session_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> ses.ListMessagesResponse:
        request = ses.ListMessagesRequest(
            session_id=session_id, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._sessions.ListMessages, request, timeout)

    def list_messages(
        self, session_id: str, *, page_size: int = 0
    ) -> AsyncGenerator[ses.Message, None]:
        """The session's messages in conversation order, fetched a page at a time."""

        async def page(token: str) -> tuple[Iterable[ses.Message], str]:
            response = await self.list_messages_page(
                session_id, page_size=page_size, page_token=token
            )
            return response.messages, response.next_page_token

        return _paged(page)

    def list_pending_approvals(
        self, session_id: str, *, page_size: int = 0
    ) -> AsyncGenerator[ses.PendingApproval, None]:
        """Tool calls waiting for a decision; decide with stream_message(approve/edit/reject)."""

        async def page(token: str) -> tuple[Iterable[ses.PendingApproval], str]:
            request = ses.ListPendingApprovalsRequest(
                session_id=session_id, page_size=page_size, page_token=token
            )
            response = await self._unary(self._sessions.ListPendingApprovals, request, None)
            return response.approvals, response.next_page_token

        return _paged(page)

    # -- agents and events -----------------------------------------------------------------

    async def list_agents(self, *, timeout: float | None = None) -> list[agent_pb2.Agent]:
        response = await self._unary(
            self._agents.ListAgents, agent_pb2.ListAgentsRequest(), timeout
        )
        return list(response.agents)

    async def watch_events(
        self,
        *,
        session_id: str = "",
        event_types: Sequence[event_pb2.EventType.ValueType] = (),
        after_event_id: int | None = None,
    ) -> AsyncGenerator[event_pb2.Event, None]:
        """Committed events after `after_event_id` (None: from now on), then live. A broken
        stream is reopened after the last event received; before the first one, only when a
        cursor was given (else events in the gap could be missed)."""
        attempt = 0
        while True:
            attempt += 1
            request = event_pb2.WatchEventsRequest(session_id=session_id, event_types=event_types)
            if after_event_id is not None:
                request.after_event_id = after_event_id
            call = self._events.WatchEvents(request, metadata=self._metadata)
            try:
                async for response in call:
                    after_event_id = response.event.event_id
                    attempt = 1
                    yield response.event
                return
            except grpc.aio.AioRpcError as exc:
                error = AgentRuntimeError.from_rpc_error(exc)
                delay = self._retry.delay_before_retry(attempt, error)
                if delay is None or after_event_id is None:
                    raise error from None
            finally:
                call.cancel()
            await asyncio.sleep(delay)

    # -- unary calls -----------------------------------------------------------------------

    async def _unary(
        self,
        method: Callable[..., Awaitable[_Response]],
        request: object,
        timeout: float | None,
        *,
        idempotent: bool = True,
    ) -> _Response:
        deadline = _Deadline(self._timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(request, metadata=self._metadata, timeout=deadline.remaining())
            except grpc.aio.AioRpcError as exc:
                error = AgentRuntimeError.from_rpc_error(exc)
                delay = self._retry.delay_before_retry(attempt, error) if idempotent else None
                if delay is None or not deadline.allows_wait(delay):
                    raise error from None
            await asyncio.sleep(delay)


async def _paged(
    fetch: Callable[[str], Awaitable[tuple[Iterable[_Item], str]]],
) -> AsyncGenerator[_Item, None]:
    token = ""
    while True:
        items, token = await fetch(token)
        for item in items:
            yield item
        if not token:
            return
