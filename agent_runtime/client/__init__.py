"""A Python client for agent-runtime: typed calls, async over grpc.aio or blocking.

    from agent_runtime.client import AgentRuntimeClient  # asyncio
    from agent_runtime.client import BlockingAgentRuntimeClient  # scripts, WSGI

Both share their requests, retries, error decoding and stream resumption (calls, attempts,
streams); each adds only its transport.

It depends on the generated protocol code (agent_runtime.v1), grpc and the google.rpc status
types only, never on the server's own packages.
"""

from agent_runtime.client.base import DEFAULT_TARGET
from agent_runtime.client.blocking import BlockingAgentRuntimeClient
from agent_runtime.client.calls import new_client_message_id, new_session_id
from agent_runtime.client.client import AgentRuntimeClient
from agent_runtime.client.connection import TlsConfig
from agent_runtime.client.errors import AgentRuntimeError, FieldViolation, TurnInterrupted
from agent_runtime.client.inputs import (
    TurnInput,
    approve,
    approve_always,
    arguments_of,
    declared_tool,
    edit,
    edit_message,
    regenerate,
    reject,
    switch_agent,
    tool_result,
    user_message,
)
from agent_runtime.client.retry import NO_RETRIES, RetryPolicy

__all__ = [
    "DEFAULT_TARGET",
    "NO_RETRIES",
    "AgentRuntimeClient",
    "AgentRuntimeError",
    "BlockingAgentRuntimeClient",
    "FieldViolation",
    "RetryPolicy",
    "TlsConfig",
    "TurnInput",
    "TurnInterrupted",
    "approve",
    "approve_always",
    "arguments_of",
    "declared_tool",
    "edit",
    "edit_message",
    "new_client_message_id",
    "new_session_id",
    "regenerate",
    "reject",
    "switch_agent",
    "tool_result",
    "user_message",
]
