"""Which tools an agent is offered, and whether a given call is one it may make."""

from __future__ import annotations

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.model import ToolCallRecord
from agent_runtime.domain.schema import schema_problems
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition


class ToolFilterService:
    def __init__(self, catalogue: dict[str, ToolDefinition] | None = None) -> None:
        self._catalogue = TOOL_CATALOGUE if catalogue is None else catalogue

    def tools_for(self, agent: AgentProfile) -> list[ToolDefinition]:
        """The tools offered to the model: the agent's allowed tools, in catalogue order."""
        allowed = set(agent.allowed_tools)
        return [tool for name, tool in self._catalogue.items() if name in allowed]

    def path_arguments(self, tool_name: str) -> tuple[str, ...]:
        """The arguments of `tool_name` that are filesystem paths (none for a tool not in
        the catalogue)."""
        tool = self._catalogue.get(tool_name)
        return tool.path_arguments if tool is not None else ()

    def is_allowed(self, agent: AgentProfile, tool_name: str) -> bool:
        return tool_name in self._catalogue and tool_name in agent.allowed_tools

    def problems(self, agent: AgentProfile, call: ToolCallRecord) -> list[str]:
        """Why the agent may not make this call; empty when it may."""
        tool = self._catalogue.get(call.tool_name)
        if tool is None or call.tool_name not in agent.allowed_tools:
            return [f"agent '{agent.name}' may not call tool '{call.tool_name}'"]
        problems = schema_problems(tool.parameters, call.arguments)
        for restriction in agent.path_restrictions:
            if not restriction.applies_to(tool.name):
                continue
            for name in tool.path_arguments:
                path = call.arguments.get(name)
                if isinstance(path, str) and not restriction.allows(path):
                    problems.append(
                        f"{name} '{path}' is not allowed for agent '{agent.name}'"
                        + (f": {restriction.description}" if restriction.description else "")
                    )
        return problems
