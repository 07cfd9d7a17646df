"""The floor: a bare grpc.aio relay of the model's answer, with no database and no domain logic.

    python -m benchmarks.floor_relay --model-url http://127.0.0.1:PORT/v1 [--listen 127.0.0.1:0]
        [--http-client httpx|aiohttp]

It serves the runtime's own `agent_runtime.v1.AgentRuntimeService/StreamMessage` (messages
from the generated code in agent_runtime/v1). Per call it POSTs the user message to the same
fake model through one shared HTTP client with "stream": true, parses the SSE minimally,
forwards every token as one StreamChunk(assistant_delta), then sends TurnCompleted. It pays
for the same gRPC stream and the same model call as the runtime, so the runtime's ratio to
it isolates what persistence and the runtime's logic cost.

The HTTP client is httpx (httpx.AsyncClient) by default, as the benchmark's issue defines the
floor; `--http-client aiohttp` uses an aiohttp.ClientSession instead, the library of the
runtime's own model client, so that the ratio compares the two on the same HTTP client. Both
do the same work per call and per token: only the code that sends the request and hands
over the body's bytes differs.

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
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import aiohttp
import grpc
import httpx

from agent_runtime.v1 import agent_runtime_pb2 as rt

SERVICE = "agent_runtime.v1.AgentRuntimeService"
HttpClientKind = Literal["httpx", "aiohttp"]
HTTP_CLIENTS: tuple[HttpClientKind, ...] = ("httpx", "aiohttp")
_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
# What either client raises when the model call fails (refused, reset, timed out...).
_HTTP_ERRORS = (httpx.HTTPError, aiohttp.ClientError)

# Opens one streaming POST of `body` and hands over the response body's bytes as they arrive;
# raises ModelStatusError if the model does not answer HTTP 200. Leaving the context closes
# the response: the connection goes back to the pool if the body was read to its end.
Post = Callable[[bytes], AbstractAsyncContextManager[AsyncIterator[bytes]]]


class ModelStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"model answered HTTP {status}")
        self.status = status


def httpx_post(client: httpx.AsyncClient, url: str) -> Post:
    @contextlib.asynccontextmanager
    async def post(body: bytes) -> AsyncIterator[AsyncIterator[bytes]]:
        async with client.stream("POST", url, content=body, headers=_HEADERS) as response:
            if response.status_code != 200:
                raise ModelStatusError(response.status_code)
            yield response.aiter_raw()

    return post


def aiohttp_post(session: aiohttp.ClientSession, url: str) -> Post:
    @contextlib.asynccontextmanager
    async def post(body: bytes) -> AsyncIterator[AsyncIterator[bytes]]:
        # Leaving `async with` releases the response; aiohttp closes the connection instead
        # of pooling it when the body was not read to its end, as httpx does.
        async with session.post(url, data=body, headers=_HEADERS) as response:
            if response.status != 200:
                raise ModelStatusError(response.status)
            # Whatever has arrived, one piece per network read (StreamReader.readany), as
            # the runtime's model client reads it.
            yield response.content.iter_any()

    return post


class FloorRelay:
    def __init__(self, posts: list[Post]) -> None:
        self._posts = posts
        self._turn_ids = itertools.count(1)

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Any
    ) -> AsyncIterator[rt.StreamChunk]:
        session_id = request.session_id
        number = next(self._turn_ids)
        turn_id = f"turn_floor_{number}"
        post = self._posts[number % len(self._posts)]
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
            async with post(body) as received:
                pending = b""
                done = False
                # Read to the end of the body (not just to [DONE]) so the connection goes back
                # to the pool, as the runtime's client does.
                async for data in received:
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
        except ModelStatusError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except _HTTP_ERRORS as exc:
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


async def open_posts(
    stack: contextlib.AsyncExitStack,
    kind: HttpClientKind,
    url: str,
    max_connections: int,
    clients: int,
) -> list[Post]:
    """`clients` HTTP clients of `kind`, each with its own pool of `max_connections` (0:
    unbounded), closed with `stack`. Call it inside the running event loop."""
    posts: list[Post] = []
    for _ in range(max(1, clients)):
        if kind == "httpx":
            client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=max_connections or None,
                    max_keepalive_connections=max_connections or 4096,
                    keepalive_expiry=60.0,
                ),
                timeout=httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=300.0),
            )
            posts.append(httpx_post(await stack.enter_async_context(client), url))
        else:
            session = aiohttp.ClientSession(
                # The same pool: max_connections (0 is unbounded in both), idle connections
                # kept 60 s. aiohttp keeps every idle one (no separate keep-alive cap).
                connector=aiohttp.TCPConnector(
                    limit=max_connections, limit_per_host=0, keepalive_timeout=60.0
                ),
                # The same timeouts: `connect` covers the wait for a free connection (httpx's
                # pool timeout), sock_connect the TCP connect, sock_read the silence between
                # two reads. aiohttp has no write timeout.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=300.0, sock_connect=10.0, sock_read=300.0
                ),
            )
            posts.append(aiohttp_post(await stack.enter_async_context(session), url))
    return posts


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


async def serve(
    listen: str,
    model_url: str,
    max_connections: int,
    clients: int,
    kind: HttpClientKind = "httpx",
) -> None:
    url = f"{model_url.rstrip('/')}/chat/completions"
    async with contextlib.AsyncExitStack() as stack:
        posts = await open_posts(stack, kind, url, max_connections, clients)
        server = grpc_server(FloorRelay(posts))
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
        "--http-client",
        choices=HTTP_CLIENTS,
        default="httpx",
        help="the HTTP client towards the model: httpx (the default, as the issue defines the "
        "floor) or aiohttp (the runtime's own model client's library)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="connection pool size towards the model, per client (0: unbounded, the default)",
    )
    parser.add_argument(
        "--http-clients",
        type=int,
        default=1,
        help="client instances, calls spread round-robin (default 1, shared): "
        "httpx.AsyncClients, or with aiohttp ClientSessions, each with its own connector",
    )
    args = parser.parse_args(argv)
    asyncio.run(
        serve(
            args.listen, args.model_url, args.max_connections, args.http_clients, args.http_client
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
