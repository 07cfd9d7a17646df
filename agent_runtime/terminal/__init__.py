"""Terminal clients (`agent-runtime chat`, `agent-runtime sessions`) on agent_runtime.client."""
