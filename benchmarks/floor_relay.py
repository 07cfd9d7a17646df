"""The floor: the runtime's model call and stream framing, with no database and no domain logic.

    AGENT_RUNTIME_LLM_BASE_URL=http://127.0.0.1:PORT/v1 python -m benchmarks.floor_relay
        [--listen 127.0.0.1:0]

It serves the runtime's own `agent_runtime.v1.AgentRuntimeService/StreamMessage` (messages
from the generated code in agent_runtime/v1) and pays for what any relay of a model answer
must pay for, exactly as the runtime pays for it:

- the model call goes through the runtime's own model client, built by the runtime's own
  bootstrap code from the same AGENT_RUNTIME_LLM_* settings (httpx on the same transport,
  the same SSE parsing, the same limits and timeouts);
- its deltas are coalesced by the runtime's own ModelReadAhead (whatever arrived since the
  last send leaves as one AssistantDelta, never waiting for more);
- a turn is framed as the runtime frames it: TurnStarted, the AssistantDeltas,
  AssistantMessage (the whole answer), TurnCompleted (stop reason and usage); a failed model
  call ends the turn with an Error chunk, as the runtime's does.

What it leaves out is what the runtime's ratio to it measures: the database (sessions,
history, the two commits per turn, the outbox), the domain (agents, tools, routing,
approvals), the live-turn registry and its relay, metrics. Its model request holds the user
message only (no system prompt, history or tool schemas: building those is the runtime's).

Prints `listening on 127.0.0.1:PORT` on stderr once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc

from agent_runtime.application.model_read_ahead import ModelReadAhead
from agent_runtime.application.ports import ChatRequest, LLMClient
from agent_runtime.collector import settle_after_start_up
from agent_runtime.config import Settings
from agent_runtime.domain.errors import ModelError
from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.model_output import ModelResponse, TextDelta
from agent_runtime.infrastructure.llm.endpoint import open_model_client
from agent_runtime.v1 import agent_runtime_pb2 as rt

SERVICE = "agent_runtime.v1.AgentRuntimeService"


class FloorRelay:
    def __init__(self, llm: LLMClient, default_model: str) -> None:
        self._llm = llm
        self._default_model = default_model
        self._numbers = itertools.count(1)

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        session_id = request.session_id
        number = next(self._numbers)
        turn_id = f"turn_floor_{number}"
        seq = itertools.count(1)
        yield rt.StreamChunk(
            session_id=session_id,
            turn_id=turn_id,
            seq=next(seq),
            turn_started=rt.TurnStarted(
                turn_id=turn_id,
                agent=request.agent or "coder",
                input_message_id=f"msg_floor_{number}_user",
            ),
        )
        user = Message(
            message_id=f"msg_floor_{number}_user",
            session_id=session_id,
            position=1,
            role=Role.USER,
            content=request.user_message.content,
            created_at=datetime.now(UTC),
        )
        chat = ChatRequest(
            model=request.model or self._default_model, system_prompt="", history=[user], tools=[]
        )
        texts: list[str] = []
        response: ModelResponse | None = None
        try:
            async with ModelReadAhead(self._llm.stream_chat(chat)) as ahead:
                while (event := await ahead.next()) is not None:
                    if isinstance(event, TextDelta):
                        texts.append(event.text)
                        yield rt.StreamChunk(
                            session_id=session_id,
                            turn_id=turn_id,
                            seq=next(seq),
                            assistant_delta=rt.AssistantDelta(text=event.text),
                        )
                    elif isinstance(event, ModelResponse):
                        response = event
        except ModelError as error:
            yield rt.StreamChunk(
                session_id=session_id,
                turn_id=turn_id,
                seq=next(seq),
                error=rt.Error(
                    code="UNAVAILABLE",
                    reason=error.reason,
                    message=error.message,
                    retryable=error.retryable,
                ),
            )
            return
        usage = response.usage if response is not None else None
        yield rt.StreamChunk(
            session_id=session_id,
            turn_id=turn_id,
            seq=next(seq),
            assistant_message=rt.AssistantMessage(
                message_id=f"msg_floor_{number}_assistant", content="".join(texts)
            ),
        )
        yield rt.StreamChunk(
            session_id=session_id,
            turn_id=turn_id,
            seq=next(seq),
            turn_completed=rt.TurnCompleted(
                stop_reason=rt.STOP_REASON_END_TURN,
                usage=rt.Usage(
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0,
                    total_tokens=usage.total_tokens if usage else 0,
                ),
            ),
        )


def grpc_server(relay: FloorRelay) -> grpc.aio.Server:
    """A server (not started, no port yet) that serves `relay` as StreamMessage."""
    server = grpc.aio.server()
    # Only StreamMessage: registered by hand, so the relay does not depend on the rest of
    # the service (other methods answer UNIMPLEMENTED).
    handler = grpc.unary_stream_rpc_method_handler(
        relay.StreamMessage,
        request_deserializer=rt.StreamMessageRequest.FromString,
        response_serializer=rt.StreamChunk.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"StreamMessage": handler}),)
    )
    return server


@contextlib.asynccontextmanager
async def floor_relay(settings: Settings) -> AsyncIterator[FloorRelay]:
    """The relay on the model client the runtime would build from `settings`."""
    http, llm, model = open_model_client(settings.model, settings.answers, settings.fake_model)
    try:
        yield FloorRelay(llm, model)
    finally:
        if http is not None:
            await http.aclose()


async def serve(listen: str, settings: Settings) -> None:
    async with floor_relay(settings) as relay:
        server = grpc_server(relay)
        port = server.add_insecure_port(listen)
        await server.start()
        settle_after_start_up()  # as the runtime's serve does
        host = listen.rpartition(":")[0]
        print(f"listening on {host}:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor_relay",
        description="The benchmark's floor. The model endpoint and its client's settings are "
        "the runtime's: AGENT_RUNTIME_LLM_BASE_URL and the other AGENT_RUNTIME_LLM_* variables.",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0 picks one)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if settings.model.is_fake:
        parser.error("set AGENT_RUNTIME_LLM_BASE_URL to the model endpoint")
    asyncio.run(serve(args.listen, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
