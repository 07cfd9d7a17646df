"""Agent profiles: who the model is told to be, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_runtime.domain.approval import ApprovalPolicy
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.tools import TOOL_CATALOGUE

CODER_PROMPT = (
    "You are an expert software engineer working in the user's repository through tools. "
    "Read before you write, make small focused changes, run the tests when you can, and "
    "explain what you changed. Call at most one tool at a time and wait for its result."
)


@dataclass(frozen=True, slots=True)
class AgentProfile:
    name: str
    description: str
    system_prompt: str
    allowed_tools: tuple[str, ...]
    approval_policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    # Optional model override for this agent; empty means the runtime's default model.
    model: str = ""


CODER = AgentProfile(
    name="coder",
    description="General coding agent with every tool.",
    system_prompt=CODER_PROMPT,
    allowed_tools=tuple(TOOL_CATALOGUE),
)


@dataclass(frozen=True, slots=True)
class AgentCatalogue:
    profiles: dict[str, AgentProfile]
    default_agent: str

    def get(self, name: str) -> AgentProfile:
        profile = self.profiles.get(name or self.default_agent)
        if profile is None:
            raise InvalidInput.field(
                "agent",
                f"unknown agent '{name}'; known agents: {', '.join(sorted(self.profiles))}",
                reason="UNKNOWN_AGENT",
            )
        return profile


def default_agents() -> AgentCatalogue:
    return AgentCatalogue(profiles={CODER.name: CODER}, default_agent=CODER.name)
