"""Decides what a finished model answer means for the turn."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.approval import ApprovalGrant, ApprovalOutcome, RuleAction
from agent_runtime.domain.model import ToolCallRecord
from agent_runtime.domain.model_output import ModelResponse
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tools import ToolDefinition


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    content: str


@dataclass(frozen=True, slots=True)
class ToolCallDecision:
    """The first tool call, validated; the client runs it (after approval if required)."""

    content: str
    call: ToolCallRecord
    requires_approval: bool
    approval_reason: str
    dropped_calls: int
    # The rule that asked (or the grant that allowed a call the rule asks about).
    approval: ApprovalOutcome = field(default_factory=lambda: ApprovalOutcome(RuleAction.ALLOW))


@dataclass(frozen=True, slots=True)
class RejectedToolCall:
    """A call the agent may not make. It never reaches the client: the model is told why."""

    content: str
    call: ToolCallRecord
    problems: tuple[str, ...]
    dropped_calls: int

    def tool_error(self) -> str:
        return "Tool call refused by the runtime: " + "; ".join(self.problems)


@dataclass(frozen=True, slots=True)
class InvalidAnswer:
    """The answer cannot be used at all (no text and no tool call)."""

    reason: str
    message: str


Decision = FinalAnswer | ToolCallDecision | RejectedToolCall | InvalidAnswer


class LLMResponseProcessor:
    def __init__(self, tool_filter: ToolFilterService | None = None) -> None:
        self._tools = tool_filter or ToolFilterService()

    def process(
        self,
        response: ModelResponse,
        agent: AgentProfile,
        declared: Sequence[ToolDefinition] = (),
        grants: Sequence[ApprovalGrant] = (),
    ) -> Decision:
        """`declared`: the tools the client declared for this turn (beside the built-in ones);
        `grants`: the session's APPROVE_ALWAYS grants."""
        if not response.tool_calls:
            if not response.content.strip():
                return InvalidAnswer(
                    "MODEL_EMPTY_ANSWER", "the model returned no text and no tool call"
                )
            return FinalAnswer(response.content)

        # One tool at a time: the rest are dropped and never enter the history.
        first = response.tool_calls[0]
        dropped = len(response.tool_calls) - 1
        if first.invalid_arguments:
            return self._rejected(
                response, first.call_id, first.tool_name, {}, dropped, first.invalid_arguments
            )
        try:
            arguments = json.loads(first.arguments_json or "{}")
        except json.JSONDecodeError as exc:
            return self._rejected(
                response,
                first.call_id,
                first.tool_name,
                {},
                dropped,
                f"arguments are not valid JSON ({exc.msg})",
            )
        except RecursionError:  # the model client bounds the depth; another LLMClient may not
            return self._rejected(
                response, first.call_id, first.tool_name, {}, dropped, "arguments nest too deeply"
            )
        if not isinstance(arguments, dict):
            return self._rejected(
                response,
                first.call_id,
                first.tool_name,
                {},
                dropped,
                "arguments are not a JSON object",
            )
        call = ToolCallRecord(first.call_id, first.tool_name, arguments)
        problems = self._tools.problems(agent, call, declared)
        if problems:
            return RejectedToolCall(response.content, call, tuple(problems), dropped)

        outcome = agent.approval_policy.decide(
            call.tool_name,
            call.arguments,
            path_arguments=self._tools.path_arguments(call.tool_name, declared),
            grants=grants,
        )
        if outcome.action is RuleAction.DENY:
            return RejectedToolCall(response.content, call, (outcome.reason,), dropped)
        asks = outcome.action is RuleAction.ASK
        tool = self._tools.offered(agent, call.tool_name, declared)
        if not asks and outcome.grant_id == "" and tool is not None and tool.requires_approval:
            # The client declared the tool as needing a human: asked, unless a grant allows it.
            outcome = _declared_as_risky(call, grants, tool.path_arguments)
            asks = outcome.action is RuleAction.ASK
        return ToolCallDecision(
            content=response.content,
            call=call,
            requires_approval=asks,
            approval_reason=outcome.reason if asks else "",
            dropped_calls=dropped,
            approval=outcome,
        )

    @staticmethod
    def _rejected(
        response: ModelResponse,
        call_id: str,
        tool_name: str,
        arguments: dict[str, object],
        dropped: int,
        problem: str,
    ) -> RejectedToolCall:
        return RejectedToolCall(
            response.content, ToolCallRecord(call_id, tool_name, arguments), (problem,), dropped
        )


def _declared_as_risky(
    call: ToolCallRecord, grants: Sequence[ApprovalGrant], path_arguments: Collection[str]
) -> ApprovalOutcome:
    granted = next(
        (g for g in grants if g.matches(call.tool_name, call.arguments, path_arguments)), None
    )
    if granted is not None:
        reason = f"allowed for this session by grant {granted.grant_id}"
        return ApprovalOutcome(RuleAction.ALLOW, reason, grant_id=granted.grant_id)
    reason = f"the client declared {call.tool_name} as needing approval"
    return ApprovalOutcome(RuleAction.ASK, reason)
