"""An IDE that exposes the tools of the MCP servers it is connected to, through the runtime.

The runtime runs no tool itself: the client does. So an IDE declares its MCP servers' tools as
client-declared tools (ToolDefinition: name, description, the tool's JSON Schema) and runs
each call the model makes on the MCP server it came from:

1. tools/list on every MCP server -> ToolDefinitions, named mcp__SERVER__TOOL (the runtime's
   tool names are 1-64 of [A-Za-z0-9_-]); a tool MCP marks destructive needs approval;
2. UpdateSession(tools) declares them for every turn of the session (or send them with each
   StreamMessageRequest, for that request only);
3. a ToolCall for one of them -> tools/call on its server -> a tool_result back to the runtime,
   which runs the next model turn; until the turn ends.

The runtime checks the model's arguments against the schema before any call reaches the IDE,
offers the tools to the agents whose `client_tools` patterns match their names, and applies
the agents' approval rules to them (e.g. `approval_rules = ["mcp__*"]`).

The MCP servers here are stand-ins in this process (McpServer), so the example runs anywhere:
with the MCP Python SDK, a ClientSession's list_tools() and call_tool() take their place.

    python examples/mcp/ide_bridge.py [MESSAGE]     (server: $AGENT_RUNTIME_TARGET)

With the built-in fake model, the default message makes the model call an MCP tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_runtime.client import (
    AgentRuntimeClient,
    approve,
    arguments_of,
    declared_tool,
    new_session_id,
    tool_result,
)
from agent_runtime.v1 import agent_runtime_pb2 as rt

TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class McpServer:
    """A stand-in for one MCP server: its tools/list and tools/call, in MCP's shapes."""

    name: str
    tools: list[dict[str, Any]]  # tools/list: {name, description, inputSchema, annotations}
    handlers: dict[str, Callable[[dict[str, Any]], str]]

    async def list_tools(self) -> list[dict[str, Any]]:
        return self.tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            text = self.handlers[name](arguments)
        except Exception as exc:  # an MCP server reports a failed tool as isError
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        return {"content": [{"type": "text", "text": text}], "isError": False}


NOTES = {"deploy": "Deploys go out on Tuesdays, after the tests pass."}
SERVERS = [
    McpServer(
        "notes",
        [
            {
                "name": "search",
                "description": "Search the team's notes",
                "inputSchema": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "minLength": 1}},
                    "required": ["query"],
                },
            },
            {
                "name": "delete",
                "description": "Delete a note",
                "inputSchema": {
                    "type": "object",
                    "properties": {"topic": {"type": "string"}},
                    "required": ["topic"],
                },
                "annotations": {"destructiveHint": True},
            },
        ],
        {
            "search": lambda args: NOTES.get(args["query"], "no note found"),
            "delete": lambda args: f"deleted {NOTES.pop(args['topic'])!r}",
        },
    ),
]


def runtime_name(server: str, tool: str) -> str:
    """mcp__SERVER__TOOL, in the characters the runtime (and OpenAI) allow, at most 64."""
    return TOOL_NAME.sub("_", f"mcp__{server}__{tool}")[:64]


async def declare(client: AgentRuntimeClient, session_id: str) -> dict[str, tuple[McpServer, str]]:
    """Every MCP server's tools, declared on the session; returns who runs which."""
    routes: dict[str, tuple[McpServer, str]] = {}
    definitions = []
    for server in SERVERS:
        for tool in await server.list_tools():
            name = runtime_name(server.name, tool["name"])
            routes[name] = (server, tool["name"])
            destructive = bool(tool.get("annotations", {}).get("destructiveHint"))
            definitions.append(
                declared_tool(
                    name,
                    tool.get("description", ""),
                    tool.get("inputSchema") or {"type": "object"},
                    requires_approval=destructive or None,
                )
            )
    await client.update_session(session_id, tools=definitions)
    return routes


async def run_turn(
    client: AgentRuntimeClient,
    session_id: str,
    message: str,
    routes: dict[str, tuple[McpServer, str]],
) -> None:
    """One user message, and the MCP tool calls it leads to, until the turn ends."""
    turn_input: Any = message
    while turn_input is not None:
        call: rt.ToolCall | None = None
        stop = rt.STOP_REASON_UNSPECIFIED
        async for chunk in client.stream_message(session_id, turn_input):
            if chunk.HasField("tool_call"):
                call = chunk.tool_call
            elif chunk.HasField("assistant_message"):
                print("assistant:", chunk.assistant_message.content)
            elif chunk.HasField("turn_completed"):
                stop = chunk.turn_completed.stop_reason
        turn_input = None
        if call is None or call.tool_name not in routes:
            continue  # an answer, or a built-in tool (the IDE runs those its own way)
        if stop == rt.STOP_REASON_AWAITING_APPROVAL:
            print(f"approval needed: {call.tool_name} ({call.approval_reason})")
            turn_input = approve(call.call_id)  # the IDE would ask its user here
            continue
        server, tool = routes[call.tool_name]
        arguments = arguments_of(call)
        print(f"mcp {server.name}/{tool} {json.dumps(arguments, sort_keys=True)}")
        result = await server.call_tool(tool, arguments)
        text = "".join(part["text"] for part in result["content"] if part["type"] == "text")
        turn_input = tool_result(call.call_id, text, is_error=result["isError"])


async def main() -> None:
    target = os.environ.get("AGENT_RUNTIME_TARGET", "127.0.0.1:50051")
    message = sys.argv[1] if len(sys.argv) > 1 else '/tool mcp__notes__search {"query": "deploy"}'
    async with AgentRuntimeClient(
        target, api_key=os.environ.get("AGENT_RUNTIME_API_KEY")
    ) as client:
        session = await client.create_session(new_session_id(), title="IDE with MCP tools")
        routes = await declare(client, session.session_id)
        print("declared:", ", ".join(routes))
        await run_turn(client, session.session_id, message, routes)


if __name__ == "__main__":
    asyncio.run(main())
