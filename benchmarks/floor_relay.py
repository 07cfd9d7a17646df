"""The floor: a bare grpc.aio relay of the model's answer, with no database and no domain logic.

    python -m benchmarks.floor_relay --model-url http://127.0.0.1:PORT/v1 [--listen 127.0.0.1:0]

It serves the runtime's own `agent_runtime.v1.AgentRuntimeService/StreamMessage` (messages
from the generated code in agent_runtime/v1). Per call it POSTs the user message to the same
fake model through one shared httpx.AsyncClient with "stream": true, parses the SSE
minimally, forwards every token as one StreamChunk(assistant_delta), then sends
TurnCompleted. It pays for the same gRPC stream and the same model call as the runtime, so
the runtime's ratio to it isolates what persistence and the runtime's logic cost.

Prints `listening on 127.0.0.1:PORT` on stderr once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx

from agent_runtime.v1 import agent_runtime_pb2 as rt

SERVICE = "agent_runtime.v1.AgentRuntimeService"


class FloorRelay:
    def __init__(self, http: list[httpx.AsyncClient], model_url: str) -> None:
        self._http = http
        self._url = f"{model_url.rstrip('/')}/chat/completions"
        self._turn_ids = itertools.count(1)

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        session_id = request.session_id
        number = next(self._turn_ids)
        turn_id = f"turn_floor_{number}"
        http = self._http[number % len(self._http)]
        body = json.dumps(
            {
                "model": request.model or "bench",
                "messages": [{"role": "user", "content": request.user_message.content}],
                "stream": True,
            }
        ).encode()
        seq = 0
        completion_tokens = 0
        try:
            async with http.stream(
                "POST",
                self._url,
                content=body,
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            ) as response:
                if response.status_code != 200:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, f"model answered HTTP {response.status_code}"
                    )
                pending = b""
                done = False
                # Read to the end of the body (not just to [DONE]) so the connection goes back
                # to the pool, as the runtime's client does.
                async for data in response.aiter_raw():
                    if done:
                        continue
                    pending += data
                    while not done:
                        end = pending.find(b"\n\n")
                        if end < 0:
                            break
                        frame, pending = pending[:end], pending[end + 2 :]
                        if not frame.startswith(b"data: "):
                            continue
                        payload = frame[6:]
                        if payload == b"[DONE]":
                            done = True
                            break
                        choices = json.loads(payload).get("choices")
                        if not choices:
                            continue
                        text = choices[0].get("delta", {}).get("content")
                        if text:
                            seq += 1
                            completion_tokens += 1
                            yield rt.StreamChunk(
                                session_id=session_id,
                                turn_id=turn_id,
                                seq=seq,
                                assistant_delta=rt.AssistantDelta(text=text),
                            )
        except httpx.HTTPError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model call failed: {exc!r}")
        seq += 1
        yield rt.StreamChunk(
            session_id=session_id,
            turn_id=turn_id,
            seq=seq,
            turn_completed=rt.TurnCompleted(
                stop_reason=rt.STOP_REASON_END_TURN,
                usage=rt.Usage(completion_tokens=completion_tokens, total_tokens=completion_tokens),
            ),
        )


async def serve(listen: str, model_url: str, max_connections: int, clients: int) -> None:
    limits = httpx.Limits(
        max_connections=max_connections or None,
        max_keepalive_connections=max_connections or 4096,
        keepalive_expiry=60.0,
    )
    timeout = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=300.0)
    async with contextlib.AsyncExitStack() as stack:
        http = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=timeout))
            for _ in range(max(1, clients))
        ]
        server = grpc.aio.server()
        relay = FloorRelay(http, model_url)
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
        port = server.add_insecure_port(listen)
        await server.start()
        host = listen.rpartition(":")[0]
        print(f"listening on {host}:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_relay")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0 picks one)")
    parser.add_argument("--model-url", required=True, help="base URL, e.g. http://127.0.0.1:8/v1")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="httpx connection pool size towards the model (0: unbounded, the default)",
    )
    parser.add_argument(
        "--http-clients",
        type=int,
        default=1,
        help="httpx.AsyncClient instances, calls spread round-robin (default 1, shared)",
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.model_url, args.max_connections, args.http_clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
