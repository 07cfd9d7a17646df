"""Which tools an agent is offered, and whether it may call a given one."""

from __future__ import annotations

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition


class ToolFilterService:
    def __init__(self, catalogue: dict[str, ToolDefinition] | None = None) -> None:
        self._catalogue = TOOL_CATALOGUE if catalogue is None else catalogue

    def tools_for(self, agent: AgentProfile) -> list[ToolDefinition]:
        """The tools offered to the model: the agent's allowed tools, in catalogue order."""
        allowed = set(agent.allowed_tools)
        return [tool for name, tool in self._catalogue.items() if name in allowed]

    def is_allowed(self, agent: AgentProfile, tool_name: str) -> bool:
        return tool_name in self._catalogue and tool_name in agent.allowed_tools
