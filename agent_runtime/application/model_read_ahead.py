"""ModelReadAhead: a model stream read by its own task, its output handed over in pieces.

The turn sends one delta chunk per take (AssistantDelta for text; ReasoningDelta and
ToolCallDelta for reasoning and a tool call's arguments). While the turn is busy (sending the
previous chunk, or the event loop is busy with other turns), the reader task gathers what
arrives in between, so one take carries several pieces of one kind: fewer chunks, each paid
for once.
A delta that arrives while the turn waits is handed over at once: the first token is never
held back to gather more. Past a bound on the text waiting to be taken, the reader stops
reading, so a turn that cannot send (its client does not read) slows its own model request
down instead of buffering without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from types import TracebackType

from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    ReasoningText,
    StreamedOutput,
    TextDelta,
    ToolCallFragment,
)

# Output gathered but not yet taken, at most (characters).
DEFAULT_MAX_PENDING_CHARS = 16 * 1024


class _Run:
    """Pieces of one kind in a row (and of one tool call), to hand over as one event."""

    __slots__ = ("first", "parts")

    def __init__(self, first: StreamedOutput) -> None:
        self.first = first
        self.parts: list[str] = [_text_of(first)]

    def joins(self, output: StreamedOutput) -> bool:
        first = self.first
        if type(output) is not type(first):
            return False
        if isinstance(output, ToolCallFragment):
            assert isinstance(first, ToolCallFragment)
            return (output.call_id, output.tool_name) == (first.call_id, first.tool_name)
        return True

    def event(self) -> StreamedOutput:
        if len(self.parts) == 1:
            return self.first
        text = "".join(self.parts)
        first = self.first
        if isinstance(first, TextDelta):
            return TextDelta(text)
        if isinstance(first, ReasoningText):
            return ReasoningText(text)
        return ToolCallFragment(first.call_id, first.tool_name, text)


def _text_of(output: StreamedOutput) -> str:
    return output.arguments if isinstance(output, ToolCallFragment) else output.text


class ModelReadAhead:
    """Use as `async with ModelReadAhead(events) as ahead: while (e := await ahead.next())`.

    Entering sends the request (starts the reader). Leaving the block (normally, on an error
    or cancelled) stops the reader and closes the model stream at once; output read but not
    yet taken is dropped, so what the turn keeps is exactly what it took.
    """

    def __init__(
        self,
        events: AsyncGenerator[ModelEvent, None],
        max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS,
    ) -> None:
        self._events = events
        self._max_pending = max_pending_chars
        self._runs: list[_Run] = []
        self._pending = 0
        self._response: ModelResponse | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._taker_waiting = False
        self._arrived = asyncio.Event()  # the reader added something
        self._room = asyncio.Event()  # the turn took the pending text
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ModelReadAhead:
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the model request is closed by the reader's aclosing
            await asyncio.wait((task,))  # its cancellation is not ours to raise

    async def next(self) -> ModelEvent | None:
        """What arrived since the last take, the pieces of one kind in a row as one event;
        None at the end.

        The streamed output comes first, in order (consecutive pieces of another kind are
        the next takes); then the final response; a failure of the stream is raised after
        the output read before it.
        """
        while True:
            if self._runs:
                run = self._runs.pop(0)
                self._pending -= sum(len(part) for part in run.parts)
                if self._pending < self._max_pending:
                    self._room.set()
                return run.event()
            if self._response is not None:
                response, self._response = self._response, None
                return response
            if self._ended:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            # No await between the checks above and this wait: no arrival is missed.
            self._arrived.clear()
            self._taker_waiting = True
            try:
                await self._arrived.wait()
            finally:
                self._taker_waiting = False

    async def _read(self) -> None:
        try:
            async with aclosing(self._events) as events:
                async for event in events:
                    if isinstance(event, ModelResponse):
                        self._response = event
                    else:
                        self._add(event)
                    self._arrived.set()
                    if self._taker_waiting:
                        # Let the waiting turn take this before parsing what came with it;
                        # its wake-up is scheduled ahead of ours.
                        await asyncio.sleep(0)
                    if self._pending >= self._max_pending:
                        self._room.clear()
                        await self._room.wait()
        except asyncio.CancelledError:
            raise  # closed by the turn
        except BaseException as error:  # the turn raises it, after the output read before it
            self._error = error
        finally:
            self._ended = True
            self._arrived.set()

    def _add(self, output: StreamedOutput) -> None:
        text = _text_of(output)
        runs = self._runs
        if runs and runs[-1].joins(output):
            runs[-1].parts.append(text)
        else:
            runs.append(_Run(output))
        self._pending += len(text)
