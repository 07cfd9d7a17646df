"""What the async and the blocking client share: connecting, the API key, retry settings, and
the attempts each call gets. The two clients add only how they call and wait."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from agent_runtime.client.attempts import Attempts
from agent_runtime.client.calls import Stubs, bearer, new_client_message_id, new_session_id
from agent_runtime.client.connection import TlsConfig, open_channel
from agent_runtime.client.inputs import TurnInput, stream_request
from agent_runtime.client.retry import RetryPolicy
from agent_runtime.client.streams import EventWatch, TurnStream
from agent_runtime.v1 import event_pb2
from agent_runtime.v1 import model_controls_pb2 as mc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0

_Channel = TypeVar("_Channel")


class ClientBase(Generic[_Channel]):
    _transport: ClassVar[Any]  # the grpc module that opens the channel: grpc or grpc.aio

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        channel: _Channel | None = None,
    ) -> None:
        """`timeout`: the default time budget of each unary call, retries included (None: no
        limit). Streams have no default limit: a turn takes as long as the model does.
        `channel`: an open channel to use instead of opening one to `target` (one with
        interceptors or credentials of its own, or a test double); `tls` and
        `channel_options` then do not apply. The client closes it."""
        self.target = target
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._channel: _Channel = (
            open_channel(self._transport, target, tls, self._retry, channel_options)
            if channel is None
            else channel
        )
        self._metadata = bearer(api_key)
        self._stubs = Stubs.over(self._channel)

    def _unary_attempts(self, timeout: float | None) -> Attempts:
        return Attempts(self._retry, self._timeout if timeout is None else timeout)

    def _turn(
        self,
        session_id: str,
        turn_input: TurnInput | str,
        client_message_id: str | None,
        agent: str,
        model: str,
        timeout: float | None,
        generation: mc.GenerationConfig | None = None,
        tools: Sequence[mc.ToolDefinition] = (),
    ) -> TurnStream:
        """A new turn. An empty session_id gets a fresh client-chosen id (so that a repeat
        cannot create a second session); without a client_message_id one is generated."""
        request = stream_request(
            session_id or new_session_id(),
            turn_input,
            client_message_id=client_message_id or new_client_message_id(),
            agent=agent,
            model=model,
            generation=generation,
            tools=tools,
        )
        return TurnStream(Attempts(self._retry, timeout), request.session_id, start=request)

    def _resumed_turn(
        self, session_id: str, turn_id: str, after_seq: int, timeout: float | None
    ) -> TurnStream:
        attempts = Attempts(self._retry, timeout)
        return TurnStream(attempts, session_id, turn_id=turn_id, after_seq=after_seq)

    def _event_watch(
        self,
        session_id: str,
        event_types: Sequence[event_pb2.EventType.ValueType],
        after_event_id: int | None,
    ) -> EventWatch:
        attempts = Attempts(self._retry, None)
        return EventWatch(
            attempts, session_id=session_id, event_types=event_types, after_event_id=after_event_id
        )
