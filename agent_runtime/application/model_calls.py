"""ModelCalls: what a turn knows of its model calls, with no I/O: how many went out, the one
in flight (when it started, the answer text it streamed), an answer recorded but not yet
committed, and when the turn's first output arrived. Kept beside the turn's row, not in it,
so that a rollback forgets none of it; TurnRecorder writes it into the row and the events."""

from __future__ import annotations

import time
from typing import Any

from agent_runtime.domain.model import Usage
from agent_runtime.domain.model_output import ModelResponse


class ModelCalls:
    def __init__(self) -> None:
        self.answers = 0  # calls that answer: the iterations max_iterations bounds
        self.requests = 0  # every call, the orchestrator's routing call too
        self.first_output_ms: int | None = None  # from the turn's start
        self._turn_started = time.monotonic()
        self._call_started: float | None = None
        self._partial: list[str] = []
        # An answer recorded but not committed yet: an ending records its outcome again.
        self.pending_outcome: dict[str, Any] | None = None
        # The ids the call in flight's streamed tool calls got, each checked unique in the
        # session at its first fragment (CallIds): recording the call checks none again.
        self.checked_call_ids: set[str] = set()

    def started(self, *, answer: bool) -> None:
        """A call goes out; `answer`: its text is the assistant's answer (kept as an
        incomplete message if the turn ends before it is recorded)."""
        self._call_started = time.monotonic()
        self._partial.clear()
        self.checked_call_ids.clear()
        self.requests += 1
        if answer:
            self.answers += 1

    def streamed(self, text: str) -> None:
        """Answer text the client was sent."""
        self._partial.append(text)

    def output_arrived(self) -> None:
        if self.first_output_ms is None:
            self.first_output_ms = round((time.monotonic() - self._turn_started) * 1000)

    def duration_ms(self) -> int:
        """How long the call in flight has been running."""
        if self._call_started is None:
            return 0
        return round((time.monotonic() - self._call_started) * 1000)

    def answered(self, model: str, response: ModelResponse) -> dict[str, Any]:
        """The call ended with `response`: its outcome, for the completion event."""
        usage = response.usage or Usage()
        self.pending_outcome = {
            "model": model,
            "duration_ms": self.duration_ms(),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": response.finish_reason or "",
        }
        self._call_started = None
        return self.pending_outcome

    def failed(self) -> int:
        """A call whose failure the turn survives (routing) ended: its duration."""
        duration = self.duration_ms()
        self._call_started = None
        self._partial.clear()
        return duration

    def cut_short(self) -> tuple[dict[str, Any] | None, int | None, str]:
        """The turn ends abnormally: (an answer's outcome whose commit failed, or None; the
        duration of a call still in flight, or None; the answer text streamed so far)."""
        outcome, self.pending_outcome = self.pending_outcome, None
        in_flight = None if self._call_started is None else self.duration_ms()
        partial = "".join(self._partial)
        self._call_started = None
        self._partial.clear()
        return outcome, in_flight, partial

    def committed(self) -> None:
        """What was answered and streamed is recorded now."""
        self.pending_outcome = None
        self._partial.clear()
