"""Server streams followed across breaks: which call each attempt opens, which responses are
new to the caller, and whether a broken stream may be reopened.

The bookkeeping is shared by the async and the blocking client; each only iterates the calls
and waits between attempts in its own way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import grpc

from agent_runtime.client.attempts import Attempts
from agent_runtime.client.calls import Metadata, Stubs
from agent_runtime.client.errors import TurnInterrupted
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2

_Response = TypeVar("_Response")
_Item = TypeVar("_Item")


class ResumableStream(ABC, Generic[_Response, _Item]):
    def __init__(self, attempts: Attempts) -> None:
        self._attempts = attempts

    @abstractmethod
    def open(self, stubs: Stubs, metadata: Metadata) -> Any:
        """The call of the next attempt: an iterator of responses (async or not, as the stubs'
        channel is)."""

    def take(self, response: _Response) -> _Item | None:
        """What to hand to the caller; None: a response the caller has had already."""
        item = self._item(response)
        if item is not None:
            self._attempts.progressed()
        return item

    def delay_after(self, failure: grpc.RpcError) -> float:
        """Seconds to wait before reopening; raises an AgentRuntimeError when it must not be."""
        return self._attempts.delay_after(failure, repeatable=self._can_reopen())

    @abstractmethod
    def _item(self, response: _Response) -> _Item | None: ...

    @abstractmethod
    def _can_reopen(self) -> bool: ...


class TurnStream(ResumableStream[rt.StreamChunk, rt.StreamChunk]):
    """A turn's chunks. Until the first chunk the turn is (re)started with the same
    StreamMessage request: its client_message_id makes the server attach a repeat to the turn
    the first attempt started. After it, ResumeStream fetches what follows the last seq.
    A turn that turns out interrupted (its process died) raises TurnInterrupted."""

    def __init__(
        self,
        attempts: Attempts,
        session_id: str,
        *,
        start: rt.StreamMessageRequest | None = None,
        turn_id: str = "",
        after_seq: int = 0,
    ) -> None:
        super().__init__(attempts)
        self._start = start
        self.session_id, self.turn_id, self.last_seq = session_id, turn_id, after_seq

    def open(self, stubs: Stubs, metadata: Metadata) -> Any:
        timeout = self._attempts.remaining()
        if self._start is not None and not self.turn_id:
            return stubs.runtime.StreamMessage(self._start, metadata=metadata, timeout=timeout)
        request = rt.ResumeStreamRequest(
            session_id=self.session_id, turn_id=self.turn_id, after_seq=self.last_seq
        )
        return stubs.runtime.ResumeStream(request, metadata=metadata, timeout=timeout)

    def _item(self, chunk: rt.StreamChunk) -> rt.StreamChunk | None:
        if chunk.turn_id == self.turn_id and chunk.seq <= self.last_seq:
            return None  # replayed by ResumeStream
        self.session_id, self.turn_id, self.last_seq = chunk.session_id, chunk.turn_id, chunk.seq
        if chunk.HasField("error") and chunk.error.reason == TurnInterrupted.REASON:
            raise TurnInterrupted.from_chunk(
                chunk.error.code,
                chunk.error.message,
                session_id=chunk.session_id,
                turn_id=chunk.turn_id,
            )
        return chunk

    def _can_reopen(self) -> bool:
        return True


class EventWatch(ResumableStream[event_pb2.WatchEventsResponse, event_pb2.Event]):
    """Committed events after a cursor, then live. Reopened after the last event received;
    before the first one only when a cursor was given (else events in the gap could be
    missed)."""

    def __init__(
        self,
        attempts: Attempts,
        *,
        session_id: str,
        event_types: Sequence[event_pb2.EventType.ValueType],
        after_event_id: int | None,
    ) -> None:
        super().__init__(attempts)
        self._session_id, self._event_types = session_id, event_types
        self.after_event_id = after_event_id

    def open(self, stubs: Stubs, metadata: Metadata) -> Any:
        request = event_pb2.WatchEventsRequest(
            session_id=self._session_id, event_types=self._event_types
        )
        if self.after_event_id is not None:
            request.after_event_id = self.after_event_id
        timeout = self._attempts.remaining()
        return stubs.events.WatchEvents(request, metadata=metadata, timeout=timeout)

    def _item(self, response: event_pb2.WatchEventsResponse) -> event_pb2.Event:
        self.after_event_id = response.event.event_id
        return response.event

    def _can_reopen(self) -> bool:
        return self.after_event_id is not None
