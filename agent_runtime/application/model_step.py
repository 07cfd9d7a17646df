"""ModelStep: one call to the model, streamed, interruptible by CancelTurn or the deadline.

No transaction is open while it runs: the commit before it ended the last one, and the
statements after it begin the next. So a slow model never holds a database lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from agent_runtime.application.context_window import fit_context_window
from agent_runtime.application.live_turns import LiveTurn
from agent_runtime.application.metrics import RuntimeMetrics
from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.application.ports import ChatRequest, LLMClient
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain.errors import ModelProtocolError
from agent_runtime.domain.model import Usage
from agent_runtime.domain.model_output import ModelEvent, ModelResponse, TextDelta
from agent_runtime.domain.tool_filter import ToolFilterService


class TurnInterrupted(Exception):
    """CancelTurn or the turn's deadline stopped the turn while it waited for the model."""


class ModelStep:
    def __init__(
        self,
        llm: LLMClient,
        tools: ToolFilterService,
        metrics: RuntimeMetrics,
        *,
        context_window_messages: int,
    ) -> None:
        self._llm = llm
        self._tools = tools
        self._metrics = metrics
        self._window = context_window_messages

    def answer_request(self, turn: TurnRecorder) -> ChatRequest:
        """What the agent's next answer is asked with: its prompt, history and tools."""
        return ChatRequest(
            model=turn.turn.model,
            system_prompt=turn.agent.system_prompt,
            history=fit_context_window(turn.history, self._window),
            tools=self._tools.tools_for(turn.agent),
        )

    async def stream(
        self, turn: TurnRecorder, live: LiveTurn, request: ChatRequest, *, answer: bool = True
    ) -> AsyncGenerator[ModelEvent, None]:
        """The call's text as it arrives (TextDelta, several tokens per delta when the turn
        is busy), then its ModelResponse; the usage is added to the turn's.

        `answer`: the text is the assistant's answer to the user: it counts as one of the
        turn's iterations, and is kept as an incomplete message if the turn ends early.
        """
        if live.stop_requested:
            raise TurnInterrupted
        turn.model_call_started()
        if answer:
            turn.model_calls += 1
        started = time.monotonic()
        first_output = True
        outcome = "error"
        response: ModelResponse | None = None
        try:
            # Leaving the block (the client gone, CancelTurn) closes the model request at once.
            async with ModelReadAhead(self._llm.stream_chat(request)) as ahead:
                while (event := await _next_event(ahead, live)) is not None:
                    if first_output:
                        first_output = False
                        self._metrics.model_first_token(time.monotonic() - started)
                        turn.model_output_arrived()
                    if isinstance(event, TextDelta):
                        if answer:
                            turn.partial_text.append(event.text)
                    else:
                        response = event
                    yield event
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit, TurnInterrupted):
            outcome = "cancelled"
            raise
        finally:
            self._metrics.model_call_finished(outcome, time.monotonic() - started)
        if response is None:
            raise ModelProtocolError("the model stream ended without a final response")
        usage = response.usage or Usage()
        self._metrics.tokens_used(usage.prompt_tokens, usage.completion_tokens)
        turn.usage = turn.usage + usage


async def _next_event(ahead: ModelReadAhead, live: LiveTurn) -> ModelEvent | None:
    """The model's next event (None at the end), interruptible by CancelTurn or the deadline.

    Only here may LiveTurn cancel the task: the task is then waiting for the model, never
    committing or sending.
    """
    if live.stop_requested:  # asked while the turn was sending the last delta
        raise TurnInterrupted
    live.in_model_read = True
    try:
        return await ahead.next()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        # Our own interrupt, and nobody else cancelled the task too (a client going away).
        if live.stop_requested and task is not None and task.uncancel() == 0:
            raise TurnInterrupted from None
        raise
    finally:
        live.in_model_read = False
