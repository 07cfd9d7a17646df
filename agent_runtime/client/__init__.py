"""A Python client for agent-runtime: typed async calls over grpc.aio.

    from agent_runtime.client import AgentRuntimeClient

It depends on the generated protocol code (agent_runtime.v1), grpc and the google.rpc status
types only, never on the server's own packages.
"""

from agent_runtime.client.client import (
    DEFAULT_TARGET,
    AgentRuntimeClient,
    new_client_message_id,
    new_session_id,
)
from agent_runtime.client.connection import TlsConfig
from agent_runtime.client.errors import AgentRuntimeError, FieldViolation
from agent_runtime.client.inputs import (
    TurnInput,
    approve,
    arguments_of,
    edit,
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
    "FieldViolation",
    "RetryPolicy",
    "TlsConfig",
    "TurnInput",
    "approve",
    "arguments_of",
    "edit",
    "new_client_message_id",
    "new_session_id",
    "reject",
    "switch_agent",
    "tool_result",
    "user_message",
]
