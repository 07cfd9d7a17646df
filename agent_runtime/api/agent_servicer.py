"""AgentService: the agent profiles this server runs."""

from __future__ import annotations

from typing import Any

from agent_runtime.api.errors import unary_errors
from agent_runtime.api.mapping import agent_to_proto
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_pb2_grpc as ag_grpc


class AgentServicer(ag_grpc.AgentServiceServicer):
    def __init__(self, agents: AgentCatalogue) -> None:
        self._agents = agents

    @unary_errors
    async def ListAgents(
        self, request: ag.ListAgentsRequest, context: Any
    ) -> ag.ListAgentsResponse:
        return ag.ListAgentsResponse(
            agents=[
                agent_to_proto(p, is_default=p.name == self._agents.default_agent)
                for p in self._agents.profiles.values()
            ]
        )
