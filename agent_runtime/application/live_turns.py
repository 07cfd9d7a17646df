"""The turns this process is running right now: their chunks so far, for followers
(idempotent retries, ResumeStream) and a handle to cancel them (CancelTurn)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator

from agent_runtime.application.chunk_relay import ChunkRelay, NoChunkRelay
from agent_runtime.domain.chunks import (
    AssistantDelta,
    Chunk,
    ChunkBody,
    ReasoningDelta,
    ToolCallDelta,
)
from agent_runtime.domain.errors import OutOfRange

# Text of the deltas kept per running turn (characters, at most 4 bytes each); beyond it the
# oldest deltas are dropped (the final message carries their text anyway), down to half of
# it at once, so memory per turn stays bounded whatever its followers do.
DEFAULT_MAX_BUFFERED_CHARS = 1024 * 1024
INTERRUPT = "agent-runtime: turn interrupted"
# A stop (CancelTurn, the deadline, shutdown) is acted on at the turn's next model read. A turn
# that has not got there this long after it was asked to stop, and waits to send a chunk
# (its client reads nothing), is stopped where it waits.
STALLED_SEND_SECONDS = 5.0


class LiveTurn:
    def __init__(
        self,
        tenant_id: str,
        session_id: str,
        turn_id: str,
        max_buffered_chars: int,
        relay: ChunkRelay | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.session_id = session_id
        self.turn_id = turn_id
        self._chunks: list[Chunk] = []
        self._max_delta_chars = max_buffered_chars
        self._delta_chars = 0
        # Followers on other replicas.
        self._relayed = (relay or NoChunkRelay()).publisher(tenant_id, session_id, turn_id)
        self._dropped_through = 0  # highest seq of a dropped delta
        self._changed = asyncio.Event()
        self._waiting = 0
        self.done = False
        self.cancel_requested = False
        self.timed_out = False
        # The task running the turn, and whether it waits for the model, or to send a chunk,
        # right now: only then may an interrupt cancel it (never in the middle of a commit).
        self._task: asyncio.Task[object] | None = None
        self.in_model_read = False
        self.waiting_to_send = False
        self.deadline_seconds: float | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled_check: asyncio.TimerHandle | None = None

    def attach(self, task: asyncio.Task[object] | None, deadline_seconds: float | None) -> None:
        self._task = task
        self.deadline_seconds = deadline_seconds
        if deadline_seconds is not None:
            self._deadline = asyncio.get_running_loop().call_later(deadline_seconds, self.expire)

    @property
    def stop_requested(self) -> bool:
        return self.cancel_requested or self.timed_out

    def publish(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        size = _delta_chars(chunk.body)
        if size is not None:
            self._delta_chars += size
            if self._delta_chars > self._max_delta_chars:
                self._drop_oldest_deltas()
        self._wake()
        self._relayed.publish(chunk)

    def finish(self) -> None:
        self.done = True
        for timer in (self._deadline, self._stalled_check):
            if timer is not None:
                timer.cancel()
        self._task = None
        self._wake()

    def cancel(self) -> None:
        """Ask the turn to stop: a model call in flight is interrupted at once."""
        self.cancel_requested = True
        self._interrupt()

    def expire(self) -> None:
        """The turn ran out of time."""
        self.timed_out = True
        self._interrupt()

    def _interrupt(self) -> None:
        if self._task is None or self.done:
            return
        if self.in_model_read:
            self._task.cancel(INTERRUPT)
        elif self._stalled_check is None:
            loop = asyncio.get_running_loop()
            self._stalled_check = loop.call_later(STALLED_SEND_SECONDS, self._stop_stalled_send)

    def _stop_stalled_send(self) -> None:
        """The turn has not reached a model read since it was asked to stop."""
        self._stalled_check = None
        if self._task is None or self.done:
            return
        if self.waiting_to_send or self.in_model_read:
            self._task.cancel(INTERRUPT)  # the stream ends; the turn records its end
        else:  # committing, or busy: look again later
            self._interrupt()

    async def follow(self, after_seq: int) -> AsyncGenerator[Chunk, None]:
        """Every chunk with seq > after_seq, then the new ones as they come, until done."""
        if after_seq < self._dropped_through:
            raise OutOfRange(
                f"chunks up to seq {self._dropped_through} of turn {self.turn_id} are no longer "
                "buffered; resume from a later seq",
                reason="RESUME_CURSOR_TOO_OLD",
                metadata={"first_available_seq": str(self._dropped_through + 1)},
            )
        sent = after_seq
        while True:
            start = bisect.bisect_right(self._chunks, sent, key=_seq)
            for chunk in self._chunks[start:]:
                sent = chunk.seq
                yield chunk
            if self._last_seq() > sent:
                continue  # published while we were yielding
            if self.done:
                return
            # Nothing can be published between the check above and this wait (no await in
            # between), so no wake-up is lost.
            changed = self._changed
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1

    def _last_seq(self) -> int:
        return self._chunks[-1].seq if self._chunks else 0

    def _wake(self) -> None:
        # Per token on the hot path: only allocate a new event when a follower waits.
        if self._waiting:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _drop_oldest_deltas(self) -> None:
        """Down to half the limit, so that dropping costs one pass now and then."""
        kept: list[Chunk] = []
        for chunk in self._chunks:
            size = _delta_chars(chunk.body)
            if size is not None and self._delta_chars > self._max_delta_chars // 2:
                self._delta_chars -= size
                self._dropped_through = max(self._dropped_through, chunk.seq)
            else:
                kept.append(chunk)
        self._chunks = kept


class LiveTurnRegistry:
    """The turns running in this process, by turn id."""

    def __init__(
        self,
        max_buffered_chars: int = DEFAULT_MAX_BUFFERED_CHARS,
        *,
        relay: ChunkRelay | None = None,
    ) -> None:
        self._turns: dict[str, LiveTurn] = {}
        self._max_buffered_chars = max_buffered_chars
        self._relay = relay
        self._idle = asyncio.Event()
        self._idle.set()

    def open(self, session_id: str, turn_id: str, *, tenant_id: str) -> LiveTurn:
        live = LiveTurn(tenant_id, session_id, turn_id, self._max_buffered_chars, self._relay)
        self._turns[turn_id] = live
        self._idle.clear()
        return live

    async def wait_idle(self, max_wait: float) -> bool:
        """Wait until no turn runs here (at most `max_wait` seconds); True if none does."""
        try:
            async with asyncio.timeout(max_wait):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def get(self, turn_id: str) -> LiveTurn | None:
        return self._turns.get(turn_id)

    def close(self, live: LiveTurn) -> None:
        live.finish()
        if self._turns.get(live.turn_id) is live:
            del self._turns[live.turn_id]
        if not self._turns:
            self._idle.set()

    def all(self) -> list[LiveTurn]:
        return list(self._turns.values())


def _seq(chunk: Chunk) -> int:
    return chunk.seq


def _delta_chars(body: ChunkBody) -> int | None:
    """The text a delta carries; None for a chunk that is not a delta (never dropped)."""
    if isinstance(body, AssistantDelta | ReasoningDelta):
        return len(body.text)
    if isinstance(body, ToolCallDelta):
        return len(body.arguments_fragment)
    return None
