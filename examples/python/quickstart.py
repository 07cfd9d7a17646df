import asyncio
import os

from agent_runtime.client import (
    AgentRuntimeClient,
    AgentRuntimeError,
    approve,
    arguments_of,
    tool_result,
)


async def main() -> None:
    target = os.environ.get("AGENT_RUNTIME_TARGET", "127.0.0.1:50051")
    api_key = os.environ.get("AGENT_RUNTIME_API_KEY")  # None: a server without keys
    async with AgentRuntimeClient(target, api_key=api_key) as client:
        session = await client.create_session(title="quickstart")

        # One turn: tokens as they stream, then how it ended.
        async for chunk in client.stream_message(session.session_id, "hello"):
            if chunk.HasField("assistant_delta"):
                print(chunk.assistant_delta.text, end="", flush=True)
            elif chunk.HasField("turn_completed"):
                print()

        # A tool call that needs approval (the built-in fake model calls the tool named
        # after /tool): approve it, run it, send the result back, read the final answer.
        ask = '/tool write_file {"path": "notes.md", "content": "hi"}'
        turn = [chunk async for chunk in client.stream_message(session.session_id, ask)]
        call = next(c.tool_call for c in turn if c.HasField("tool_call"))
        print("approval needed:", call.tool_name, arguments_of(call)["path"])
        async for chunk in client.stream_message(session.session_id, approve(call.call_id)):
            if chunk.HasField("tool_call"):
                print("approved, running", chunk.tool_call.tool_name)
        result = tool_result(call.call_id, "wrote 2 bytes to notes.md")
        async for chunk in client.stream_message(session.session_id, result):
            if chunk.HasField("assistant_message"):
                print("assistant:", chunk.assistant_message.content)

        async for message in client.list_messages(session.session_id):
            print(message.position, message.content[:60])

        try:
            await client.get_session("no-such-session")
        except AgentRuntimeError as error:
            print("error:", error.code.name, error.reason)


asyncio.run(main())
