"""ModelStep: one call to the model, streamed, interruptible by CancelTurn or the deadline.

No transaction is open while it runs: the commit before it ended the last one, and the
statements after it begin the next. So a slow model never holds a database lock.

A tool call the model streams gets its id (CallIds) when its first fragment comes: its
ToolCallDelta chunks and its ToolCall carry that one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from agent_runtime.application.call_ids import CallIds
from agent_runtime.application.context_window import (
    ContextBudget,
    fit_context_window,
    raw_tokens,
    raw_tools_tokens,
)
from agent_runtime.application.live_turns import LiveTurn
from agent_runtime.application.metrics import RuntimeMetrics
from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.application.ports import ChatRequest, LLMClient
from agent_runtime.application.token_calibration import TokenCalibration
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import ModelProtocolError
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Usage
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    ReasoningText,
    StreamedOutput,
    TextDelta,
    ToolCallFragment,
)
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tools import ToolDefinition


class TurnInterrupted(Exception):
    """CancelTurn or the turn's deadline stopped the turn while it waited for the model."""


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """The context window every agent gets unless it sets its own token budget."""

    # Messages sent to the model at most (an upper bound on top of the tokens).
    window_messages: int = 200
    window_tokens: int = 100_000
    # A single tool result larger than this share of the token budget is cut in the middle.
    max_tool_result_share: float = 0.25


class ModelStep:
    def __init__(
        self,
        llm: LLMClient,
        tools: ToolFilterService,
        metrics: RuntimeMetrics,
        *,
        context: ContextSettings,
        call_ids: CallIds,
        calibration: TokenCalibration | None = None,
    ) -> None:
        self._llm = llm
        self._tools = tools
        self._metrics = metrics
        self._context = context
        self._call_ids = call_ids
        self._calibration = calibration or TokenCalibration()

    def answer_request(self, turn: TurnRecorder, live: LiveTurn) -> ChatRequest:
        """What the agent's next answer is asked with: its prompt (with the session's
        instructions), the history that fits its context window, its tools (with the
        client's), and the generation settings (the request's over the session's over the
        agent's)."""
        agent = turn.agent
        tools = self._tools.tools_for(agent, turn.declared_tools)
        system_prompt = agent.prompt_with(turn.session.instructions)
        budget = ContextBudget(
            max_tokens=agent.context_window_tokens or self._context.window_tokens,
            max_messages=self._context.window_messages,
            max_tool_result_share=self._context.max_tool_result_share,
        )
        fixed = raw_tokens(system_prompt) + raw_tools_tokens(tools)
        window = fit_context_window(
            turn.history,
            budget,
            fixed_raw_tokens=fixed,
            ratio=self._calibration.ratio(live.tenant_id, live.session_id),
        )
        return ChatRequest(
            model=turn.turn.model,
            system_prompt=system_prompt,
            history=window.messages,
            tools=tools,
            generation=_applicable(turn.generation.over(agent.generation), tools),
            prompt_estimate=fixed + window.raw_tokens,
        )

    @staticmethod
    def delta(turn: TurnRecorder, output: StreamedOutput) -> chunks.ChunkBody | None:
        """The chunk that streams this piece of the answer to the client, if any."""
        if isinstance(output, TextDelta):
            return chunks.AssistantDelta(output.text)
        if isinstance(output, ReasoningText):
            return chunks.ReasoningDelta(output.text) if turn.agent.stream_reasoning else None
        return chunks.ToolCallDelta(output.call_id, output.tool_name, output.arguments)

    async def stream(
        self, turn: TurnRecorder, live: LiveTurn, request: ChatRequest, *, answer: bool = True
    ) -> AsyncGenerator[ModelEvent, None]:
        """The call's text as it arrives (TextDelta, several tokens per delta when the turn
        is busy), then its ModelResponse; the usage is added to the turn's. A streamed tool
        call's fragments, and the call in the response, carry the id it got (CallIds).

        `answer`: the text is the assistant's answer to the user: it counts as one of the
        turn's iterations, and is kept as an incomplete message if the turn ends early.
        """
        turn.calls.started(answer=answer)
        if live.stop_requested:  # the commit before was recording MODEL_REQUEST_STARTED
            raise TurnInterrupted
        started = time.monotonic()
        first_output = True
        outcome = "error"
        response: ModelResponse | None = None
        named: dict[str, str] = {}  # the model's id of a streamed call -> the one it got
        try:
            # Leaving the block (the client gone, CancelTurn) closes the model request at once.
            async with ModelReadAhead(self._llm.stream_chat(request)) as ahead:
                while (event := await _next_event(ahead, live)) is not None:
                    if first_output:
                        first_output = False
                        self._metrics.model_first_token(time.monotonic() - started)
                        turn.calls.output_arrived()
                    if isinstance(event, ToolCallFragment):
                        if event.call_id not in named:
                            named[event.call_id] = await self._call_ids.for_streamed_call(
                                live.tenant_id, turn.session.session_id, event.call_id
                            )
                            turn.calls.checked_call_ids.add(named[event.call_id])
                        if (call_id := named[event.call_id]) != event.call_id:
                            event = replace(event, call_id=call_id)
                    elif isinstance(event, ModelResponse):
                        event = response = _with_call_ids(event, named)
                    elif answer and isinstance(event, TextDelta):
                        turn.calls.streamed(event.text)
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
        turn.used(usage)
        if answer:
            self._calibration.observe(
                live.tenant_id, live.session_id, request.prompt_estimate, usage.prompt_tokens
            )


def _with_call_ids(response: ModelResponse, named: dict[str, str]) -> ModelResponse:
    """The response, its streamed calls under the ids they got."""
    if not named:
        return response
    calls = tuple(
        replace(call, call_id=named[call.call_id]) if call.call_id in named else call
        for call in response.tool_calls
    )
    return replace(response, tool_calls=calls)


def _applicable(generation: GenerationConfig, tools: Sequence[ToolDefinition]) -> GenerationConfig:
    """Without tools there is no tool choice; a named one only while that tool is offered
    (an agent switch mid-turn may have taken it away)."""
    choice = generation.tool_choice
    if choice is None:
        return generation
    if not tools or (
        choice.mode is ToolChoiceMode.TOOL and all(t.name != choice.tool_name for t in tools)
    ):
        return replace(generation, tool_choice=None)
    return generation


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
