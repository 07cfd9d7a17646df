"""Generated wire contract (protos/agent_runtime/v1). Do not edit."""
