"""AgentRouter: the turn's agent switches. The orchestrator's routing of a new message
(one classification call, then keyword rules, then the fallback), and `switch_mode`, the
runtime's own tool with which the model moves the session to another agent."""

from __future__ import annotations

import logging
from contextlib import aclosing

from agent_runtime.application.live_turns import LiveTurn
from agent_runtime.application.model_step import ModelStep
from agent_runtime.application.ports import ChatRequest
from agent_runtime.application.turn_recorder import TurnRecorder
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.errors import ModelError
from agent_runtime.domain.model import MAX_SWITCH_REASON_CHARS, Role, ToolCallRecord
from agent_runtime.domain.model_output import ModelResponse
from agent_runtime.domain.routing import (
    RoutingDecision,
    classification_prompt,
    parse_routing_answer,
    route_by_keywords,
)

log = logging.getLogger(__name__)

SWITCH_MODE_TOOL = "switch_mode"


class AgentRouter:
    def __init__(self, agents: AgentCatalogue, model: ModelStep) -> None:
        self._agents = agents
        self._model = model

    async def route(self, turn: TurnRecorder, live: LiveTurn) -> None:
        """Pick the specialist for the newest user message and switch to it (recorded, to
        commit). A failed classification call falls back to keyword rules."""
        question = next((m for m in reversed(turn.history) if m.role is Role.USER), None)
        request = ChatRequest(
            model=turn.turn.model,
            system_prompt=classification_prompt(self._agents),
            history=[question] if question else [],
            tools=[],
        )
        decision: RoutingDecision | None = None
        try:
            stream = self._model.stream(turn, live, request, answer=False)
            async with aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, ModelResponse):
                        await turn.model_answered(event)
                        decision = parse_routing_answer(event.content, self._agents)
        except ModelError as error:
            log.warning(
                "turn %s: routing call failed (%s); using keyword rules",
                turn.turn.turn_id,
                error.reason,
            )
            await turn.model_call_failed(error.reason)
        if decision is None:
            decision = route_by_keywords(question.content if question else "", self._agents)
        reason = f"routed by {decision.method.value} (confidence {decision.confidence:.2f})"
        if decision.reason:
            reason += f": {decision.reason}"
        target = self._agents.get(decision.agent)
        turn.chunk(await turn.switch_agent(target, reason[:MAX_SWITCH_REASON_CHARS]))

    async def switch_mode(self, turn: TurnRecorder, call: ToolCallRecord) -> None:
        """The model called switch_mode: switch and tell the model, whose next call is the
        new agent's; an unknown mode is a tool error the model reads."""
        mode = str(call.arguments.get("mode", ""))
        target = self._agents.profiles.get(mode)
        if target is None or target.routes:
            known = ", ".join(p.name for p in self._agents.specialists())
            await turn.append(
                Role.TOOL,
                f"Unknown mode '{mode}'. Known: {known}",
                tool_call_id=call.call_id,
                is_error=True,
            )
            return
        # Cut, not refused: the model's reason is untrusted output, the switch still holds.
        reason = str(call.arguments.get("reason", ""))[:MAX_SWITCH_REASON_CHARS]
        switched = await turn.switch_agent(target, reason)
        await turn.append(
            Role.TOOL, f"Switched to agent '{target.name}'.", tool_call_id=call.call_id
        )
        turn.chunk(switched)
