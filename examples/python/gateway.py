import os

from agent_runtime.client import AgentRuntimeError, BlockingAgentRuntimeClient, arguments_of

# One client per worker process, shared by its threads.
client = BlockingAgentRuntimeClient(
    os.environ.get("AGENT_RUNTIME_TARGET", "127.0.0.1:50051"),
    api_key=os.environ.get("AGENT_RUNTIME_API_KEY"),
)


# Flask: @app.post("/sessions/<session_id>/messages"), called with request.json["text"].
def post_message(session_id: str, text: str) -> tuple[dict[str, object], int]:
    try:
        turn = list(client.stream_message(session_id, text))
    except AgentRuntimeError as error:  # the turn did not start: bad input, busy, no access
        status = 400 if error.code.name == "INVALID_ARGUMENT" else 502
        return {"error": error.reason or error.code.name, "message": error.message}, status
    answer = "".join(c.assistant_message.content for c in turn)
    calls = [c.tool_call for c in turn if c.HasField("tool_call")]
    tools = [{"id": t.call_id, "tool": t.tool_name, "arguments": arguments_of(t)} for t in calls]
    waiting = any(t.requires_approval for t in calls)
    return {"answer": answer, "tool_calls": tools, "awaiting_approval": waiting}, 200
