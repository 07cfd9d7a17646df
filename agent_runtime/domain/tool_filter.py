"""Which tools an agent is offered, and whether a given call is one it may make."""

from __future__ import annotations

from collections.abc import Sequence

from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.argument_check import argument_problems
from agent_runtime.domain.model import ToolCallRecord
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition


class ToolFilterService:
    def __init__(self, catalogue: dict[str, ToolDefinition] | None = None) -> None:
        self._catalogue = TOOL_CATALOGUE if catalogue is None else catalogue

    @property
    def builtin_names(self) -> frozenset[str]:
        """Names a client may not declare a tool under."""
        return frozenset(self._catalogue)

    def tools_for(
        self, agent: AgentProfile, declared: Sequence[ToolDefinition] = ()
    ) -> list[ToolDefinition]:
        """The tools offered to the model: the agent's allowed built-in tools, in catalogue
        order, then the client's declared tools its client_tools patterns match."""
        allowed = set(agent.allowed_tools)
        offered = [tool for name, tool in self._catalogue.items() if name in allowed]
        return offered + [tool for tool in declared if agent.may_use_declared(tool.name)]

    def path_arguments(
        self, tool_name: str, declared: Sequence[ToolDefinition] = ()
    ) -> tuple[str, ...]:
        """The arguments of `tool_name` (built-in, or one of the `declared` tools) that are
        filesystem paths; none for a tool neither knows."""
        tool = self._catalogue.get(tool_name) or next(
            (tool for tool in declared if tool.name == tool_name), None
        )
        return tool.path_arguments if tool is not None else ()

    def problems(
        self,
        agent: AgentProfile,
        call: ToolCallRecord,
        declared: Sequence[ToolDefinition] = (),
    ) -> list[str]:
        """Why the agent may not make this call; empty when it may."""
        tool = self.offered(agent, call.tool_name, declared)
        if tool is None:
            return [f"agent '{agent.name}' may not call tool '{call.tool_name}'"]
        problems = argument_problems(tool, call.arguments)
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

    def offered(
        self, agent: AgentProfile, name: str, declared: Sequence[ToolDefinition]
    ) -> ToolDefinition | None:
        if name in self._catalogue:
            return self._catalogue[name] if name in agent.allowed_tools else None
        for tool in declared:
            if tool.name == name:
                return tool if agent.may_use_declared(name) else None
        return None
